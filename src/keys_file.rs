//! `imgedge keys new`: mints an API key and, with `--append-to`, adds its hash to the
//! `api_keys` value of a TOML file, editing only that value (part of the binary).

use std::path::Path;

use anyhow::Context;

use imgedge::auth::{KeyKind, KeyRing, is_project_name, mint_key};

/// `imgedge keys new`: mints a key, prints it once, and prints or appends its entry.
pub(crate) fn new_key(
    project: &str,
    kind: KeyKind,
    append_to: Option<&Path>,
) -> anyhow::Result<()> {
    let (key, hash) = mint_key(kind);
    // Refuse a bad project name before showing a key that could never be configured.
    if !is_project_name(project) {
        anyhow::bail!(
            "--project `{project}`: a project name is 1 to 64 characters of A-Z, a-z, 0-9, \
             `_` or `-`"
        );
    }
    let entry = format!("{project}:{hash}");
    if let Some(path) = append_to {
        let old = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let new = append_api_key(old.as_deref(), &entry)
            .with_context(|| format!("cannot add the key to {}", path.display()))?;
        check_appended(&new, &key)
            .with_context(|| format!("refusing to write {}", path.display()))?;
        std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))?;
    }
    let kind_name = match kind {
        KeyKind::Publishable => "publishable",
        KeyKind::Secret => "secret",
    };
    println!("New {kind_name} API key for project `{project}` (it will not be shown again):");
    println!();
    println!("    {key}");
    println!();
    match append_to {
        Some(path) => {
            println!("Its hash was added to api_keys in {}.", path.display());
            println!("(IMGEDGE_API_KEYS, when set, replaces that list.)");
        }
        None => {
            println!("Add its hash to the configuration (comma-separate several entries):");
            println!("    TOML:        api_keys = \"{entry}\"");
            println!("    environment: IMGEDGE_API_KEYS={entry}");
        }
    }
    Ok(())
}

/// Adds `entry` to the `api_keys` string of a TOML document, changing nothing else:
/// the existing value line is rewritten in place (its trailing comment kept), or a new
/// line is added before the first table. `None` means the file does not exist yet.
fn append_api_key(text: Option<&str>, entry: &str) -> anyhow::Result<String> {
    let Some(text) = text else {
        return Ok(format!("api_keys = {}\n", toml_string(entry)));
    };
    let table: toml::Table = text.parse().context("the file is not valid TOML")?;
    let current = match table.get("api_keys") {
        None => None,
        Some(toml::Value::String(s)) => Some(s.as_str()),
        Some(_) => anyhow::bail!("api_keys must be a string"),
    };
    let Some(current) = current else {
        let line = format!("api_keys = {}\n", toml_string(entry));
        // Keys after a `[table]` header would belong to that table: insert before it.
        let mut offset = 0;
        for l in text.split_inclusive('\n') {
            if l.trim_start().starts_with('[') {
                return Ok(format!("{}{line}{}", &text[..offset], &text[offset..]));
            }
            offset += l.len();
        }
        let separator = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        return Ok(format!("{text}{separator}{line}"));
    };
    let kept = current.trim().trim_end_matches(',').trim_end();
    let value = if kept.is_empty() {
        entry.to_owned()
    } else {
        format!("{kept},{entry}")
    };
    // Find the one line `api_keys = <string>` whose value parses back to `current`.
    let mut found = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if let Some(span) = value_span(line, current) {
            if found.is_some() {
                anyhow::bail!("api_keys appears on several lines; add `{entry}` by hand");
            }
            found = Some((offset + span.start)..(offset + span.end));
        }
        offset += line.len();
    }
    let Some(span) = found else {
        anyhow::bail!(
            "api_keys is not a one-line string this tool can edit; add `{entry}` by hand"
        );
    };
    Ok(format!(
        "{}{}{}",
        &text[..span.start],
        toml_string(&value),
        &text[span.end..]
    ))
}

/// Where, in `line`, the string value of an `api_keys = ...` assignment equal to
/// `expected` sits: the shortest prefix of the text after `=` that parses as it.
fn value_span(line: &str, expected: &str) -> Option<std::ops::Range<usize>> {
    let rest = line.trim_start().strip_prefix("api_keys")?;
    let rest = rest.trim_start().strip_prefix('=')?;
    let start = line.len() - rest.len();
    let start = start + (rest.len() - rest.trim_start().len());
    let tail = &line[start..];
    for (end, c) in tail.char_indices() {
        if end == 0 || (c != '"' && c != '\'') {
            continue;
        }
        let candidate = &tail[..=end];
        let parsed: Result<toml::Table, _> = format!("v = {candidate}").parse();
        if let Ok(table) = parsed
            && table.get("v").and_then(toml::Value::as_str) == Some(expected)
        {
            return Some(start..start + end + 1);
        }
    }
    None
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Re-reads the edited document as the service would and checks the new key works.
fn check_appended(text: &str, key: &str) -> anyhow::Result<()> {
    let table: toml::Table = text.parse().context("the edit produced invalid TOML")?;
    let value = table
        .get("api_keys")
        .and_then(toml::Value::as_str)
        .context("the edit lost api_keys")?;
    let ring = KeyRing::parse(value)
        .map_err(|e| anyhow::anyhow!(e))
        .context("api_keys")?;
    ring.authenticate(key)
        .context("the new key does not authenticate against the edited api_keys")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str = "web:abc";

    #[test]
    fn append_api_key_edits_only_that_value() {
        let cases: &[(Option<&str>, &str)] = &[
            (None, "api_keys = \"web:abc\"\n"),
            (Some(""), "api_keys = \"web:abc\"\n"),
            (
                Some("# imgedge\ndata_dir = \"/srv\""),
                "# imgedge\ndata_dir = \"/srv\"\napi_keys = \"web:abc\"\n",
            ),
            (
                Some("a = 1\n[table]\nb = 2\n"),
                "a = 1\napi_keys = \"web:abc\"\n[table]\nb = 2\n",
            ),
            (
                Some("# keys\napi_keys = \"\"  # none yet\nauto_avif = true\n"),
                "# keys\napi_keys = \"web:abc\"  # none yet\nauto_avif = true\n",
            ),
            (
                Some("  api_keys='app:1, ' # 'quoted'\n"),
                "  api_keys=\"app:1,web:abc\" # 'quoted'\n",
            ),
            (
                Some("api_keys = \"app:1\" # \"x\"\r\nother = \"api_keys = \\\"app:1\\\"\"\r\n"),
                "api_keys = \"app:1,web:abc\" # \"x\"\r\nother = \"api_keys = \\\"app:1\\\"\"\r\n",
            ),
        ];
        for (old, expected) in cases {
            assert_eq!(append_api_key(*old, ENTRY).unwrap(), *expected, "{old:?}");
        }
        let refused: &[(&str, &str)] = &[
            ("api_keys = [\"a\"]\n", "must be a string"),
            ("api_keys = \"\"\"\na:1\"\"\"\n", "by hand"),
            ("not toml = = 1", "not valid TOML"),
        ];
        for (old, needle) in refused {
            let err = format!("{:#}", append_api_key(Some(old), ENTRY).unwrap_err());
            assert!(err.contains(needle), "{old:?}: {err}");
        }
    }

    #[test]
    fn appended_keys_authenticate() {
        let (key, hash) = mint_key(KeyKind::Secret);
        let text = append_api_key(Some("api_keys = \"\"\n"), &format!("p:{hash}")).unwrap();
        check_appended(&text, &key).unwrap();
        assert!(check_appended(&text, &mint_key(KeyKind::Secret).0).is_err());
    }
}
