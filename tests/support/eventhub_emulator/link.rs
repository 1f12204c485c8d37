//! Receiver links on partitions: the source address, the selector filter and where it
//! starts, the `com.microsoft:epoch` owner level (an equal or higher epoch steals with
//! `amqp:link:stolen`), and pre-settled deliveries with typed annotations under link credit.

use super::*;
/// `amqps://ns/<hub>/ConsumerGroups/<group>/Partitions/<id>` → (group, id).
pub(super) fn parse_partition_address(addr: &str) -> Option<(String, String)> {
    let i = addr.find("/ConsumerGroups/")?;
    let rest = &addr[i + "/ConsumerGroups/".len()..];
    let (group, rest) = rest.split_once("/Partitions/")?;
    Some((group.to_string(), rest.trim_end_matches('/').to_string()))
}

pub(super) fn selector_of(attach: &Attach) -> Option<String> {
    let filter = attach.source.as_ref()?.filter.as_ref()?;
    let v = filter.get(&Symbol::from("apache.org:selector-filter:string"))?;
    match v {
        Value::Described(d) => match &d.value {
            Value::String(s) => Some(s.clone()),
            _ => None,
        },
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Where a selector starts in `events`: the index of the first event it admits.
pub(super) fn start_index(selector: &str, events: &[(i64, i64, i64)]) -> usize {
    // events: (sequence, offset, enqueued ms)
    let parse = |field: &str| -> Option<(bool, String)> {
        let i = selector.find(field)?;
        let rest = selector[i + field.len()..].trim_start();
        let (inclusive, rest) = match rest.strip_prefix(">=") {
            Some(r) => (true, r),
            None => (false, rest.strip_prefix('>')?),
        };
        let v = rest.trim().trim_matches('\'').to_string();
        Some((inclusive, v))
    };
    let first = |key: fn(&(i64, i64, i64)) -> i64, inclusive: bool, v: i64| {
        events
            .iter()
            .position(|e| if inclusive { key(e) >= v } else { key(e) > v })
            .unwrap_or(events.len())
    };
    if let Some((inc, v)) = parse("amqp.annotation.x-opt-offset") {
        if v == "@latest" {
            return events.len();
        }
        return first(|e| e.1, inc, v.parse().unwrap_or(-1));
    }
    if let Some((inc, v)) = parse("amqp.annotation.x-opt-sequence-number") {
        return first(|e| e.0, inc, v.parse().unwrap_or(-1));
    }
    if let Some((inc, v)) = parse("amqp.annotation.x-opt-enqueued-time") {
        return first(|e| e.2, inc, v.parse().unwrap_or(0));
    }
    // No filter: the service's default is the end of the stream.
    events.len()
}

pub(super) fn event_message(e: &Stored) -> Message<Data> {
    let mut annotations = MessageAnnotations::builder()
        .insert(Symbol::from("x-opt-sequence-number"), Value::Long(e.sequence))
        .insert(Symbol::from("x-opt-offset"), Value::String(e.offset.to_string()))
        .insert(
            Symbol::from("x-opt-enqueued-time"),
            Value::Timestamp(Timestamp::from_milliseconds(e.enqueued_ms)),
        );
    if let Some(k) = &e.partition_key {
        annotations = annotations.insert(Symbol::from("x-opt-partition-key"), Value::String(k.clone()));
    }
    Message::builder()
        .message_annotations(annotations.build())
        .data(e.body.clone())
        .build()
}

/// Register a receiver link on a partition and find where its selector starts; or the error
/// it is refused with.
#[allow(clippy::too_many_arguments)]
pub(super) fn register_receiver(
    s: &Shared,
    pidx: usize,
    group: &str,
    partition: &str,
    selector: &str,
    epoch: Option<i64>,
    link_id: u64,
    steal: &CancellationToken,
) -> Result<usize, (definitions::ErrorCondition, &'static str)> {
    let mut hub = s.hub();
    if pidx >= hub.partitions.len() {
        return Err((definitions::AmqpError::NotFound.into(), "no such partition"));
    }
    hub.stats
        .receivers
        .push((partition.to_string(), selector.to_string(), epoch));
    let e = epoch.unwrap_or(-1);
    let key = (group.to_string(), partition.to_string());
    let blocked = hub
        .links
        .get(&key)
        .is_some_and(|links| links.iter().any(|(_, other, _)| *other > e));
    if blocked {
        return Err((LinkError::Stolen.into(), "a receiver with a higher epoch is connected"));
    }
    // Epoch receivers take the partition from every receiver at or below their level.
    if epoch.is_some() {
        let mut stolen = 0;
        if let Some(links) = hub.links.get_mut(&key) {
            links.retain(|(_, other, token)| {
                if *other <= e {
                    token.cancel();
                    stolen += 1;
                    false
                } else {
                    true
                }
            });
        }
        hub.stats.stolen += stolen;
    }
    hub.links.entry(key).or_default().push((link_id, e, steal.clone()));
    let keys: Vec<(i64, i64, i64)> = hub.partitions[pidx]
        .iter()
        .map(|e| (e.sequence, e.offset, e.enqueued_ms))
        .collect();
    Ok(start_index(selector, &keys))
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_partition(
    s: Arc<Shared>,
    mut sender: Sender,
    group: String,
    partition: String,
    selector: String,
    epoch: Option<i64>,
    kill: CancellationToken,
) {
    let Ok(pidx) = partition.parse::<usize>() else {
        let _ = sender
            .close_with_error(definitions::Error::new(
                definitions::AmqpError::NotFound,
                Some("no such partition".to_string()),
                None,
            ))
            .await;
        return;
    };
    let link_id = s.next_link.fetch_add(1, Ordering::Relaxed);
    let steal = CancellationToken::new();
    let admitted = register_receiver(&s, pidx, &group, &partition, &selector, epoch, link_id, &steal);
    let mut next = match admitted {
        Ok(next) => next,
        Err((condition, text)) => {
            let _ = sender
                .close_with_error(definitions::Error::new(condition, Some(text.to_string()), None))
                .await;
            return;
        }
    };
    let unregister = |s: &Shared| {
        let mut hub = s.hub();
        if let Some(v) = hub.links.get_mut(&(group.clone(), partition.clone())) {
            v.retain(|(id, _, _)| *id != link_id);
        }
    };
    'outer: loop {
        // Everything available now, each pre-settled, as credit allows.
        loop {
            // A stolen or killed link delivers nothing more (like the service, which detaches
            // it at once); `biased` so a ready send never wins over a cancellation.
            if steal.is_cancelled() || kill.is_cancelled() {
                break 'outer;
            }
            let event = s.hub().partitions[pidx].get(next).cloned();
            let Some(event) = event else { break };
            let sendable = Sendable::builder().message(event_message(&event)).settled(true).build();
            tokio::select! {
                biased;
                _ = steal.cancelled() => break 'outer,
                _ = kill.cancelled() => break 'outer,
                r = sender.send(sendable) => if r.is_err() { break 'outer },
            }
            next += 1;
            let drop_all = {
                let mut hub = s.hub();
                hub.stats.delivered += 1;
                match hub.drop_after {
                    Some(n) if hub.stats.delivered >= n => {
                        hub.drop_after = None;
                        true
                    }
                    _ => false,
                }
            };
            if drop_all {
                s.drop_all();
                break 'outer;
            }
        }
        let notified = s.new_events.notified();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = sender.on_detach() => { unregister(&s); return; }
            _ = steal.cancelled() => break,
            _ = kill.cancelled() => break,
        }
    }
    unregister(&s);
    if steal.is_cancelled() && !kill.is_cancelled() {
        let _ = sender
            .close_with_error(definitions::Error::new(
                LinkError::Stolen,
                Some("New receiver with higher epoch is created".to_string()),
                None,
            ))
            .await;
    } else if !kill.is_cancelled() {
        let _ = tokio::time::timeout(Duration::from_secs(2), sender.close()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::start_index;

    #[test]
    fn selectors() {
        let ev = [(0, 0, 1000), (1, 100, 2000), (2, 200, 3000)];
        assert_eq!(start_index("amqp.annotation.x-opt-offset > '-1'", &ev), 0);
        assert_eq!(start_index("amqp.annotation.x-opt-offset > '@latest'", &ev), 3);
        assert_eq!(start_index("amqp.annotation.x-opt-offset >'100'", &ev), 2);
        assert_eq!(start_index("amqp.annotation.x-opt-offset >='100'", &ev), 1);
        assert_eq!(start_index("amqp.annotation.x-opt-sequence-number >'0'", &ev), 1);
        assert_eq!(start_index("amqp.annotation.x-opt-enqueued-time >='2000'", &ev), 1);
    }
}
