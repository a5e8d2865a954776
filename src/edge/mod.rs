//! The image edge (CDN listener): Thumbor-style URL in, optimized image out.
//!
//! `handle` is the data path, readable top to bottom:
//! parse URL → check signature → check limits → visibility (per request, cache hits
//! included) → negotiate format → variant cache (coalesced) → on miss: `load` (the source
//! and overlays, through the originals cache) → `run_job` (one job, one preflight of its
//! headers, admission, then render and ETag hash on the CPU pool) → respond.

pub mod access;
mod context;
pub mod hints;
pub mod negotiate;
pub mod respond;
pub mod srcset;
pub mod url;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::cache::Variant;
use crate::db::{EdgeFacts, Visibility};
use crate::error::EdgeError;
use crate::http_body::{Body, empty, full};
use crate::imaging::{self, FormatChoice, Job, Original, Preflight, Pyramid, Run};
use crate::key::ObjectKey;
pub use context::{Edge, Settings};
use url::ParsedUrl;

/// Answers one CDN request. Never panics on input; every failure becomes an `EdgeError`.
pub async fn handle<B>(edge: &Edge, req: Request<B>, request_id: &str) -> Response<Body> {
    let started = Instant::now();
    match serve(edge, &req).await {
        Ok(resp) => resp,
        Err(e) => {
            if matches!(e, EdgeError::Overloaded) {
                edge.metrics.observe_shed_answer(started.elapsed());
            }
            e.into_response(request_id)
        }
    }
}

async fn serve<B>(edge: &Edge, req: &Request<B>) -> Result<Response<Body>, EdgeError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(EdgeError::MethodNotAllowed);
    }
    if req.uri().path() == "/" {
        return Ok(landing_page(edge, req.method()));
    }
    let parsed = url::parse(req.uri().path())?;
    access::authorize_url(&edge.signing, &parsed)?;
    serve_parsed(edge, req, &parsed).await.map_err(|e| match e {
        EdgeError::NotFound => EdgeError::KeyNotServed {
            key: parsed.key.to_string(),
            hint: url::misplaced_option_hint(&parsed.key),
        },
        e => e,
    })
}

/// `serve` once the URL is understood and allowed.
async fn serve_parsed<B>(
    edge: &Edge,
    req: &Request<B>,
    parsed: &ParsedUrl,
) -> Result<Response<Body>, EdgeError> {
    let deadline = Instant::now() + edge.settings.request_deadline;
    let hinted = hints::resolve(
        &parsed.recipe,
        req.headers(),
        edge.settings.client_hints,
        edge.settings.max_output_side,
    );
    let resolved;
    let parsed = if hinted.recipe == parsed.recipe {
        parsed
    } else {
        resolved = ParsedUrl {
            recipe: hinted.recipe.clone(),
            ..parsed.clone()
        };
        &resolved
    };
    check_requested_size(edge, parsed)?;
    let facts = ensure_public(edge, &parsed.key).await?;
    let negotiated = negotiate::negotiate(
        &parsed.recipe,
        req.headers().get(header::ACCEPT),
        edge.negotiation,
    );
    if parsed.meta {
        return describe(edge, parsed, &facts, negotiated.choice, deadline, &hinted).await;
    }
    let cache_key = format!(
        "{}|{}",
        url::canonical(&parsed.recipe, false, &parsed.key),
        negotiated.cache_tag()
    );
    let hit = edge.caches.has_variant(&cache_key);
    edge.metrics.cache_lookup("variant", hit);
    let render = render_variant(edge, parsed, &facts, negotiated.choice, deadline);
    let variant = tokio::time::timeout_at(deadline, edge.caches.variant(cache_key, render))
        .await
        .map_err(|_| EdgeError::Deadline)?
        .map_err(unshare)?;
    let max_age = parsed
        .recipe
        .filters
        .max_age
        .map_or(edge.settings.cache_max_age_secs, |m| {
            m.min(edge.settings.cache_max_age_secs)
        });
    let caching = respond::Caching {
        max_age,
        vary_accept: negotiated.vary,
        vary_hints: hinted.vary,
        accept_hints: edge.settings.client_hints,
    };
    Ok(respond::image(
        req.method(),
        req.headers(),
        &variant,
        caching,
    ))
}

/// `GET /`: a person who opens the CDN's address in a browser gets a short text page that
/// says what this listener answers and where to go next, not a JSON 400 about a missing key.
fn landing_page(edge: &Edge, method: &Method) -> Response<Body> {
    let cdn = edge.settings.cdn_base_url.as_str();
    let api = edge.settings.api_base_url.as_str();
    let signing = match edge.signing.requires_signature() {
        true => "This server only serves signed URLs: `imgedge url <path>` prints one.",
        false => "`unsafe/` URLs are served; `imgedge url <path>` prints signed ones.",
    };
    let playground = match edge.settings.playground {
        true => format!("Try options in the playground: {api}/playground\n"),
        false => String::new(),
    };
    let text = format!(
        "imgedge image CDN\n\
         \n\
         This address serves public images through Thumbor-style URLs:\n\
         \n\
         \x20 {cdn}/unsafe/fit-in/300x200/filters:format(webp)/<key>\n\
         \x20 {cdn}/unsafe/meta/fit-in/300x200/<key>   (JSON: what that URL would do)\n\
         \n\
         {signing}\n\
         {playground}\
         Files and their visibility are managed through the storage API at {api}/v1/files\n\
         (OpenAPI description: {api}/v1/openapi.json). The URL grammar, every filter and the\n\
         settings are described in the README of the imgedge repository.\n"
    );
    let body = match *method {
        Method::HEAD => empty(),
        _ => full(text),
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if edge.settings.client_hints {
        // A browser that opens the CDN's address directly learns to send hints to it.
        h.insert(
            http::HeaderName::from_static("accept-ch"),
            HeaderValue::from_static(hints::ACCEPT_CH),
        );
    }
    resp
}

/// Refuses explicit output sizes over the limit before any I/O. A `fit-in` box that may
/// neither enlarge nor pad (`fit-in/99999x99999/`) is not an output size: the source's
/// own size decides, and the plan checks that once the header is read.
fn check_requested_size(edge: &Edge, parsed: &ParsedUrl) -> Result<(), EdgeError> {
    use crate::imaging::recipe::{Dim, Fit, Upscale};
    let filters = &parsed.recipe.filters;
    if matches!(parsed.recipe.fit, Fit::FitIn | Fit::AdaptiveFitIn)
        && filters.fill.is_none()
        && filters.upscale != Upscale::Allow
    {
        return Ok(());
    }
    let limit = edge.settings.max_output_side;
    let px = |d: Dim| match d {
        Dim::Px(n) => n,
        Dim::Auto | Dim::Orig => 0,
    };
    let (w, h) = (px(parsed.recipe.width), px(parsed.recipe.height));
    if w > limit || h > limit {
        return Err(EdgeError::OutputTooLarge {
            width: w,
            height: h,
            limit,
        });
    }
    Ok(())
}

/// Only `public` files are served; everything else is indistinguishable from missing.
async fn ensure_public(edge: &Edge, key: &ObjectKey) -> Result<Arc<EdgeFacts>, EdgeError> {
    let db = edge.db.clone();
    let lookup_key = key.clone();
    let facts = edge
        .caches
        .visibility(key, async move {
            db.edge_facts(&lookup_key)
                .await
                .map(|found| found.map(Arc::new))
        })
        .await
        .map_err(EdgeError::MetadataUnavailable)?;
    match facts {
        Some(facts) if facts.visibility == Visibility::Public => Ok(facts),
        _ => Err(EdgeError::NotFound),
    }
}

/// Reads a stored object through the originals cache (one fetch for concurrent callers).
async fn fetch(edge: &Edge, key: &ObjectKey) -> Result<Bytes, EdgeError> {
    let storage = edge.storage.clone();
    let limit = edge.settings.max_source_bytes;
    let timeout = edge.settings.storage_timeout;
    let metrics = edge.metrics.clone();
    let fetch_key = key.clone();
    let fetch = async move {
        metrics.storage_fetches.inc();
        match tokio::time::timeout(timeout, storage.get(&fetch_key, limit)).await {
            Ok(result) => result,
            Err(_) => Err(crate::storage::StorageError::Timeout),
        }
        .map_err(EdgeError::from)
    };
    edge.caches.original(key, fetch).await.map_err(unshare)
}

/// The overlays `watermark()` and `frame()` name: public files of the same store, read
/// through the originals cache. One that is missing or not public is the URL's mistake
/// (400 naming it), never a sign that a private file exists.
async fn fetch_overlays(
    edge: &Edge,
    parsed: &ParsedUrl,
) -> Result<Vec<(String, Bytes)>, EdgeError> {
    let mut overlays: Vec<(String, Bytes)> = Vec::new();
    for (filter, raw) in parsed.recipe.filters.overlay_keys() {
        if overlays.iter().any(|(k, _)| k == raw) {
            continue;
        }
        let missing = || {
            EdgeError::Url(url::UrlError {
                segment: match filter {
                    "frame" => format!("frame({raw})"),
                    _ => format!("{filter}({raw},...)"),
                },
                reason: format!("the {filter} image `{raw}` is not a public file of this store"),
            })
        };
        let key = ObjectKey::parse(raw).map_err(|_| missing())?;
        match ensure_public(edge, &key).await {
            Ok(_) => {}
            Err(EdgeError::NotFound) => return Err(missing()),
            Err(e) => return Err(e),
        }
        let bytes = match fetch(edge, &key).await {
            Err(EdgeError::NotFound) => return Err(missing()),
            other => other?,
        };
        overlays.push((raw.to_owned(), bytes));
    }
    Ok(overlays)
}

/// The bytes to render from: the smallest reduced copy still good enough for the recipe
/// (see `Pyramid::level_for`), else the original. A copy that cannot be read falls back
/// to the original, which is always correct. Also gives the source's rank in the decode
/// share: the copy's long edge, `u32::MAX` for the original.
async fn fetch_source(
    edge: &Edge,
    parsed: &ParsedUrl,
    facts: &EdgeFacts,
) -> Result<(u32, Bytes, Option<Original>), EdgeError> {
    let level = match &facts.pyramid {
        Some(p) if edge.settings.derivatives => p
            .level_for(&parsed.recipe, edge.settings.max_output_side)
            .map(|level| (p, level)),
        _ => None,
    };
    if let Some((pyramid, level)) = level {
        let key = parsed.key.derivative(Pyramid::long_edge(level));
        match fetch(edge, &key).await {
            Ok(bytes) => {
                return Ok((Pyramid::long_edge(level), bytes, Some(pyramid.original())));
            }
            Err(EdgeError::NotFound) => copy_missing(edge, &parsed.key, pyramid).await,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "reduced copy unreadable; using the original");
            }
        }
    }
    let bytes = fetch(edge, &parsed.key).await?;
    Ok((u32::MAX, bytes, None))
}

/// A recorded reduced copy is not in storage (removed by hand, lost with a bucket): the
/// file goes back to the builder, and the edge renders from the original meanwhile. Only
/// the one request (of any node) that sends it back says so; the others stay quiet instead
/// of warning on every request.
async fn copy_missing(edge: &Edge, key: &ObjectKey, pyramid: &Pyramid) {
    match edge.db.rebuild_derivatives(key, &pyramid.to_string()).await {
        Ok(true) => {
            tracing::warn!(key = %key, "a reduced copy is missing; rebuilding them, serving from the original meanwhile");
            edge.caches.purge(key).await;
            edge.derivatives_wanted.notify_one();
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(key = %key, error = %e, "a reduced copy is missing"),
    }
}

/// Renders and hashes the output for its ETag, both on the CPU pool (hashing a large
/// output is CPU work too, kept off the async runtime).
fn render_tagged(
    job: &Job,
    preflight: &Preflight,
    run: Run,
) -> Result<(imaging::Encoded, String), imaging::ImagingError> {
    let encoded = imaging::render_planned(job, preflight, run)?;
    let digest = Sha256::digest(&encoded.bytes);
    let etag = format!("\"{}\"", hex::encode(&digest[..16]));
    Ok((encoded, etag))
}

async fn render_variant(
    edge: &Edge,
    parsed: &ParsedUrl,
    facts: &EdgeFacts,
    choice: FormatChoice,
    deadline: Instant,
) -> Result<Arc<Variant>, EdgeError> {
    let loaded = load(edge, parsed, facts, deadline).await?;
    let (encoded, etag) =
        run_job(edge, parsed, facts, choice, deadline, loaded, render_tagged).await?;
    let m = &edge.metrics;
    m.renders.inc();
    m.observe_stage("decode", encoded.timings.decode);
    m.observe_stage("transform", encoded.timings.transform);
    m.observe_stage("encode", encoded.timings.encode);
    Ok(Arc::new(Variant {
        key: parsed.key.clone(),
        bytes: Bytes::from(encoded.bytes),
        format: encoded.format,
        width: encoded.width,
        height: encoded.height,
        etag,
        render_time: encoded.timings.decode + encoded.timings.transform + encoded.timings.encode,
    }))
}

/// Longest a render waits for its memory to fit in the budget (for its source before
/// reading it, for the rest once it holds a CPU slot) before it is shed with 503: about one
/// large render's time, so a burst of bombs is refused quickly instead of holding
/// connections and source bytes until the deadline.
const MEMORY_WAIT: Duration = Duration::from_secs(3);

/// What a render reads from storage, and what it holds while reading: the bytes to render
/// from (a reduced copy or the original) with their rank in the decode share, the overlays,
/// the source's memory, and the CPU slot taken first while the pool is overloaded.
struct Loaded {
    rank: u32,
    bytes: Bytes,
    reduced: Option<Original>,
    overlays: Vec<(String, Bytes)>,
    memory: crate::budget::Reservation,
    early: Option<crate::cpu::Reservation>,
}

/// The storage stage of a miss: reserves memory for the source, then reads it and the
/// overlays (through the originals cache).
async fn load(
    edge: &Edge,
    parsed: &ParsedUrl,
    facts: &EdgeFacts,
    deadline: Instant,
) -> Result<Loaded, EdgeError> {
    // While the pool is overloaded most arrivals are refused, and reading their sources
    // first cost the served ones CPU (copies and page faults: ~2.7 ms per arrival on the
    // W1 overload test); then take a slot before reading. Otherwise read first, so a slot
    // never idles through a storage round trip.
    let early = if edge.cpu.overloaded() {
        Some(edge.cpu.reserve(deadline).await?)
    } else {
        None
    };
    // Memory for the source before it is read (its registered size; a reduced copy is
    // smaller); the rest of the render's is reserved once it may run.
    let memory = edge
        .memory
        .reserve_source(
            facts.size.min(edge.settings.max_source_bytes),
            deadline.min(Instant::now() + MEMORY_WAIT),
        )
        .await?;
    let (rank, bytes, reduced) = fetch_source(edge, parsed, facts).await?;
    let overlays = fetch_overlays(edge, parsed).await?;
    Ok(Loaded {
        rank,
        bytes,
        reduced,
        overlays,
        memory,
        early,
    })
}

/// The CPU stage of a miss: one job, checked once from its headers (`imaging::preflight`),
/// admitted by memory, joined to the decode share, then run by `work` (render or describe)
/// on the CPU pool.
async fn run_job<T: Send + 'static>(
    edge: &Edge,
    parsed: &ParsedUrl,
    facts: &EdgeFacts,
    choice: FormatChoice,
    deadline: Instant,
    loaded: Loaded,
    work: fn(&Job, &Preflight, Run) -> Result<T, imaging::ImagingError>,
) -> Result<T, EdgeError> {
    let Loaded {
        rank,
        bytes,
        reduced,
        overlays,
        memory,
        early,
    } = loaded;
    let job = Job {
        bytes,
        recipe: parsed.recipe.clone(),
        output: choice,
        default_quality: edge.settings.default_quality,
        auto_quality_target: edge.settings.auto_quality_target,
        tuning: edge.settings.tuning,
        limits: edge.imaging_limits.clone(),
        reduced,
        overlays,
    };
    // Headers only, on this thread (no pixel is decoded): a bomb or an oversized output
    // is refused here, before it queues for a CPU slot.
    let preflight = imaging::preflight(&job)?;
    // Admission by memory, from the headers. The rest of the memory is reserved once the
    // job has a CPU slot, so that waiting renders hold only their source bytes and the CPU
    // queue's shedding order decides who waits (reserving first made the memory wait a
    // second queue: W1 overload accepted p99 went from 1x to 22x the unloaded one).
    let need = preflight.memory_need(&job);
    edge.memory.check(need)?;
    // Join before queueing for a CPU slot, so that every member of a burst is known by
    // the time the first one decodes.
    let ticket = preflight.decode_need().map(|need| {
        let source = imaging::Source {
            bytes: job.bytes.clone(),
            reduced,
            rank,
            need: need.scale,
            precision: need.precision,
        };
        // Keyed by the file's version too: a file replaced in the middle of a burst must not
        // mix old and new bytes in one decode.
        let file = format!("{}\n{}\n{}", parsed.key, facts.size, facts.updated_at);
        edge.decodes.join(file, source)
    });
    let reservation = match early {
        Some(reservation) => reservation,
        None => edge.cpu.reserve(deadline).await?,
    };
    let memory = memory
        .grow_to(need, deadline.min(Instant::now() + MEMORY_WAIT))
        .await?;
    let result = reservation
        .run(deadline, move |cancel| {
            let run = Run {
                cancel: Some(cancel),
                share: ticket.as_ref(),
            };
            let out = work(&job, &preflight, run);
            drop((job, ticket));
            // The reservation is held until the job really ends, also when its caller has
            // gone; a large job's buffers are handed back first (`budget::settle`).
            crate::budget::settle(memory);
            out
        })
        .await??;
    if reduced.is_some() {
        edge.metrics.derivative_renders.inc();
    }
    Ok(result)
}

/// `meta/`: JSON describing the source, the operations and the output; never cached.
async fn describe(
    edge: &Edge,
    parsed: &ParsedUrl,
    facts: &EdgeFacts,
    choice: FormatChoice,
    deadline: Instant,
    hinted: &hints::Resolved,
) -> Result<Response<Body>, EdgeError> {
    let loaded = load(edge, parsed, facts, deadline).await?;
    let work = imaging::describe_planned;
    let mut doc = run_job(edge, parsed, facts, choice, deadline, loaded, work).await?;
    doc["key"] = serde_json::json!(parsed.key.as_str());
    doc["canonical"] = serde_json::json!(url::canonical(&parsed.recipe, false, &parsed.key));
    // The ratio `dpr()` applied and the client hints it read (sizes above are after it).
    doc["dpr"] = serde_json::json!(hinted.dpr.as_f32());
    doc["client_hints_read"] = serde_json::json!(hinted.vary);
    let mut resp = crate::http_body::json_no_store(StatusCode::OK, doc.to_string());
    let h = resp.headers_mut();
    if let Some(vary) = respond::header_list(hinted.vary) {
        h.insert(header::VARY, vary);
    }
    crate::http_body::allow_any_origin(h);
    Ok(resp)
}

/// Errors shared between coalesced waiters arrive as `Arc<EdgeError>`.
fn unshare(e: Arc<EdgeError>) -> EdgeError {
    Arc::unwrap_or_clone(e)
}
