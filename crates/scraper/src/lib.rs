//! Reading model servers' load: the `/metrics` page parser for each supported engine, and the
//! background loops that scrape every endpoint and publish the result into the datastore.
#![forbid(unsafe_code)]

mod engine;
mod health;
mod page;
mod scrape;

pub use engine::{Engine, MetricNames};
pub use health::{HealthTracker, Transition};
pub use page::{PageError, parse_page};
pub use scrape::{ScrapeConfig, Scraper};
