//! Blackhole sink: acknowledges everything at once and keeps nothing (benchmarks, tests,
//! and a placeholder while an output is being set up).

use serde::Deserialize;

use super::{SendReport, Sink, SinkConfig, SinkError};
use crate::config::{typed, ConfigIssue};
use crate::event::Event;

/// `[sinks.NAME] type = "blackhole"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

pub fn factory(_name: &str, table: toml::Value, prefix: &str) -> Result<Box<dyn SinkConfig>, ConfigIssue> {
    let c: BlackholeConfig = typed(table, prefix)?;
    Ok(Box::new(c))
}

impl SinkConfig for BlackholeConfig {
    fn build(&self, _name: &str) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(Blackhole))
    }
}

struct Blackhole;

#[async_trait::async_trait]
impl Sink for Blackhole {
    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        Ok(SendReport {
            bytes: events.iter().map(|e| e.raw.len() as u64).sum(),
            rejected: Vec::new(),
            settle: None,
        })
    }
}
