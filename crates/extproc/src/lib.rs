//! The Envoy ext_proc protocol as an endpoint picker speaks it, with no I/O.
//!
//! [`StreamMachine`] consumes the `ProcessingRequest`s of one HTTP request in order and says what
//! to send back. When the request is complete (headers and whole body) it asks its caller for a
//! routing decision ([`Step::Decide`]); the caller answers with [`StreamMachine::decided`]. The
//! tonic service is a thin adapter that feeds messages in and writes the replies out.
//!
//! Modes: `FULL_DUPLEX_STREAMED` (the header reply is deferred until the body is complete, the body
//! goes back as `StreamedBodyResponse` chunks of at most [`MAX_CHUNK`] bytes) and `BUFFERED` (the
//! header reply goes at once; the decision rides on the body reply). Replies are strictly ordered.
#![forbid(unsafe_code)]

mod headers;
mod machine;
mod metadata;
mod reply;

pub use envoy_types::pb::envoy::service::ext_proc::v3 as proto;
pub use headers::{DESTINATION_HEADER, RequestHead, SYSTEM_HEADERS};
pub use machine::{
    BodyMode, Decided, MachineError, Rejection, RouteRequest, Step, StreamMachine, response_chunk,
};
pub use metadata::{DESTINATION_METADATA_NAMESPACE, SUBSET_HINT_KEY, SUBSET_HINT_NAMESPACE};
pub use reply::MAX_CHUNK;
