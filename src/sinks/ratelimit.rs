//! Optional per-sink rate limit in events per second (`rate_limit_eps`), for SIEM licences
//! that cap EPS: a GCRA limiter (`governor`) in front of any sink, waiting before each send
//! (backpressure, never dropping). Bursts up to a tenth of a second's worth.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::{BatchLimits, SendReport, Sink, SinkContext, SinkError};
use crate::event::Event;
use crate::telemetry::SinkLabels;

pub struct RateLimited {
    inner: Box<dyn Sink>,
    limiter: Arc<DefaultDirectRateLimiter>,
    burst: NonZeroU32,
    ctx: Option<SinkContext>,
}

/// Waits until `n` events may pass, `burst` at most at a time.
async fn admit(limiter: &DefaultDirectRateLimiter, burst: NonZeroU32, ctx: Option<&SinkContext>, mut n: usize) {
    let start = Instant::now();
    while n > 0 {
        let take = n.min(burst.get() as usize);
        let k = NonZeroU32::new(take as u32).expect("take > 0");
        // `take` never exceeds the burst, so the limiter can always grant it.
        let _ = limiter.until_n_ready(k).await;
        n -= take;
    }
    if let Some(ctx) = ctx {
        let waited = start.elapsed().as_secs_f64();
        if waited > 0.0 {
            ctx.metrics
                .sink_throttled_seconds
                .get_or_create(&SinkLabels {
                    sink: ctx.name.to_string(),
                })
                .inc_by(waited);
        }
    }
}

impl RateLimited {
    pub fn new(inner: Box<dyn Sink>, eps: NonZeroU32) -> RateLimited {
        RateLimited::shared(vec![inner], eps).pop().expect("one instance")
    }

    /// Wraps every instance of one sink behind a single limiter: the limit is for the sink,
    /// however many instances deliver at once.
    pub fn shared(instances: Vec<Box<dyn Sink>>, eps: NonZeroU32) -> Vec<RateLimited> {
        let burst = NonZeroU32::new(eps.get() / 10).unwrap_or(NonZeroU32::MIN);
        let limiter = Arc::new(RateLimiter::direct(Quota::per_second(eps).allow_burst(burst)));
        instances
            .into_iter()
            .map(|inner| RateLimited {
                inner,
                limiter: limiter.clone(),
                burst,
                ctx: None,
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Sink for RateLimited {
    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        admit(&self.limiter, self.burst, self.ctx.as_ref(), events.len()).await;
        self.inner.send(events).await
    }

    async fn start(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        self.ctx = Some(ctx.clone());
        self.inner.start(ctx).await
    }

    fn batch_limits(&self) -> Option<BatchLimits> {
        self.inner.batch_limits()
    }

    fn max_unsettled(&self) -> usize {
        self.inner.max_unsettled()
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    struct Count(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl Sink for Count {
        async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
            self.0.fetch_add(events.len().max(1), Ordering::Relaxed);
            Ok(SendReport::default())
        }
    }

    #[tokio::test]
    async fn holds_the_rate() {
        let n = Arc::new(AtomicUsize::new(0));
        let mut s = RateLimited::new(Box::new(Count(n.clone())), NonZeroU32::new(50).unwrap());
        let start = Instant::now();
        // 5 pass at once (the burst), the other 145 need about three seconds.
        admit(&s.limiter, s.burst, None, 150).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(2700), "{took:?}");
        assert!(took < Duration::from_millis(4500), "{took:?}");
        s.send(&[]).await.unwrap();
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }
}
