//! PLACEHOLDER until the url parser merges.
#![allow(dead_code, unused_variables)]
use crate::imaging::recipe::Recipe;
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature { None, Unsafe, Hmac(String) }
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);
impl ObjectKey { pub fn parse(raw: &str) -> Result<ObjectKey, UrlError> { Ok(ObjectKey(raw.into())) } pub fn as_str(&self) -> &str { &self.0 } }
impl std::fmt::Display for ObjectKey { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(&self.0) } }
pub struct ParsedUrl { pub signature: Signature, pub meta: bool, pub recipe: Recipe, pub key: ObjectKey, pub signed_path: String }
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("segment `{segment}`: {reason}")]
pub struct UrlError { pub segment: String, pub reason: String }
pub fn parse(path: &str) -> Result<ParsedUrl, UrlError> { unimplemented!() }
pub fn canonical(recipe: &Recipe, meta: bool, key: &ObjectKey) -> String { unimplemented!() }
