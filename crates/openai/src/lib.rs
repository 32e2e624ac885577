//! OpenAI request bodies: one parse per request, and a `model` rewrite that splices the new value
//! into the original bytes.
//!
//! The reference picker decodes the body into a map, edits it and re-encodes it (two parses and an
//! encode, with keys re-sorted). Here serde_json validates the document once while borrowing the
//! fields the picker needs as raw slices; their byte offsets in the body make the rewrite a splice:
//! every byte outside the `model` value is unchanged.
#![forbid(unsafe_code)]

mod api;
mod body;
pub mod tokens;
mod usage;

pub use api::ApiKind;
pub use body::{ParseError, ParsedRequest, parse_request, rewrite_model};
pub use usage::{Usage, UsageScanner};
