//! The `$cbs` and `$management` nodes: put-token (202, or 401 for a scripted bad token),
//! READ of the hub and its partitions with exactly typed map bodies, and the reply links.

use super::*;

pub(super) async fn serve_replies(
    mut sender: Sender,
    mut rx: mpsc::UnboundedReceiver<Message<AmqpValue<Value>>>,
    kill: CancellationToken,
) {
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    let sendable = Sendable::builder().message(m).settled(true).build();
                    if let Err(e) = sender.send(sendable).await {
                        trace!("reply not sent: {e:?}");
                        return;
                    }
                }
                None => break,
            },
            _ = sender.on_detach() => return,
            _ = kill.cancelled() => return,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sender.close()).await;
}

pub(super) fn prop<'a>(ap: &'a Option<ApplicationProperties>, key: &str) -> Option<&'a SimpleValue> {
    ap.as_ref()?.0.get(key)
}

pub(super) fn prop_str(ap: &Option<ApplicationProperties>, key: &str) -> Option<String> {
    match prop(ap, key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

pub(super) fn reply(
    status: i32,
    description: &str,
    request: &Message<Body<Value>>,
    body: Value,
) -> Message<AmqpValue<Value>> {
    let correlation = request.properties.as_ref().and_then(|p| p.message_id.clone());
    Message::builder()
        .properties(Properties {
            correlation_id: correlation,
            ..Default::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("status-code", SimpleValue::Int(status))
                .insert("status-description", SimpleValue::String(description.to_string()))
                .build(),
        )
        .value(body)
        .build()
}

pub(super) fn body_string(m: &Message<Body<Value>>) -> String {
    match &m.body {
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

pub(super) fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = OrderedMap::new();
    for (k, v) in entries {
        m.insert(Value::String(k.to_string()), v);
    }
    Value::Map(m)
}

pub(super) fn management_read(s: &Shared, request: &Message<Body<Value>>) -> Message<AmqpValue<Value>> {
    let ap = &request.application_properties;
    let ty = prop_str(ap, "type").unwrap_or_default();
    let name = prop_str(ap, "name").unwrap_or_default();
    let mut hub = s.hub();
    hub.stats.management_reads += 1;
    if prop_str(ap, "operation").as_deref() != Some("READ") {
        return reply(400, "unsupported operation", request, Value::Null);
    }
    if name != hub.name {
        return reply(404, "no such event hub", request, Value::Null);
    }
    match ty.as_str() {
        "com.microsoft:eventhub" => {
            let ids: Vec<Value> = (0..hub.partitions.len())
                .map(|i| Value::String(i.to_string()))
                .collect();
            let body = map(vec![
                ("name", Value::String(hub.name.clone())),
                (
                    "created_at",
                    Value::Timestamp(Timestamp::from_milliseconds(1_700_000_000_000)),
                ),
                ("partition_count", Value::Int(hub.partitions.len() as i32)),
                ("partition_ids", Value::Array(Array::from(ids))),
            ]);
            reply(200, "OK", request, body)
        }
        "com.microsoft:partition" => {
            let pid = prop_str(ap, "partition").unwrap_or_default();
            let Some(events) = pid.parse::<usize>().ok().and_then(|i| hub.partitions.get(i)) else {
                return reply(404, "no such partition", request, Value::Null);
            };
            let last = events.last();
            let body = map(vec![
                ("name", Value::String(hub.name.clone())),
                ("partition", Value::String(pid.clone())),
                ("type", Value::String("com.microsoft:partition".to_string())),
                (
                    "begin_sequence_number",
                    Value::Long(events.first().map_or(0, |e| e.sequence)),
                ),
                (
                    "last_enqueued_sequence_number",
                    Value::Long(last.map_or(-1, |e| e.sequence)),
                ),
                ("last_enqueued_sequence_number_epoch", Value::Long(0)),
                (
                    "last_enqueued_offset",
                    Value::String(last.map_or(-1, |e| e.offset).to_string()),
                ),
                (
                    "last_enqueued_time_utc",
                    Value::Timestamp(Timestamp::from_milliseconds(last.map_or(0, |e| e.enqueued_ms))),
                ),
                ("is_partition_empty", Value::Bool(events.is_empty())),
            ]);
            reply(200, "OK", request, body)
        }
        _ => reply(404, "unknown entity type", request, Value::Null),
    }
}

pub(super) fn put_token(s: &Shared, request: &Message<Body<Value>>) -> Message<AmqpValue<Value>> {
    let token = body_string(request);
    let mut hub = s.hub();
    hub.stats.put_tokens += 1;
    let ok = prop_str(&request.application_properties, "operation").as_deref() == Some("put-token")
        && !token.is_empty()
        && hub.bad_token.as_ref().is_none_or(|b| !token.contains(b.as_str()));
    if ok {
        reply(202, "Accepted", request, Value::Null)
    } else {
        hub.stats.rejected_tokens += 1;
        reply(401, "Unauthorized", request, Value::Null)
    }
}

pub(super) async fn serve_requests(
    s: Arc<Shared>,
    node: String,
    mut receiver: Receiver,
    replies: Replies,
    kill: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            _ = kill.cancelled() => return,
            d = receiver.recv::<Body<Value>>() => match d {
                Ok(d) => d,
                Err(e) => {
                    trace!("request link on {node} ended: {e:?}");
                    return;
                }
            },
        };
        if receiver.accept(&delivery).await.is_err() {
            return;
        }
        let request = delivery.message();
        trace!(
            "request on {node}: {:?}",
            request.application_properties.as_ref().map(|a| a.0.get("operation"))
        );
        let response = if node == "$cbs" {
            put_token(&s, request)
        } else {
            management_read(&s, request)
        };
        let reply_to = request
            .properties
            .as_ref()
            .and_then(|p| p.reply_to.clone())
            .unwrap_or_default();
        // The reply link is attached before the first request; allow for it arriving late.
        let mut tx = None;
        for _ in 0..100 {
            tx = replies.lock().unwrap().get(&format!("{node}|{reply_to}")).cloned();
            if tx.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match tx {
            Some(tx) => {
                if tx.send(response).is_err() {
                    trace!("reply link to {reply_to} is gone");
                }
            }
            None => trace!("no reply link {reply_to}"),
        }
    }
}
