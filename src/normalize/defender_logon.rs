//! Defender XDR IdentityLogonEvents and DeviceLogonEvents → OCSF Authentication (3002).

use super::super::common::{obs, observe_user, uid_of, Obj};
use super::super::ocsf::{Class, Draft};
use super::super::{Ctx, NormalizeError};
use super::{account, parse, Row};

/// `LogonType` → OCSF `logon_type_id` (Windows logon types; others 99).
fn logon_type(t: Option<&str>) -> Option<(u8, String)> {
    let t = t?;
    let key: String = t
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let id = match key.as_str() {
        "interactive" => 2,
        "network" => 3,
        "batch" => 4,
        "service" => 5,
        "unlock" => 7,
        "networkcleartext" => 8,
        "newcredentials" => 9,
        "remoteinteractive" | "remotedesktop" => 10,
        "cachedinteractive" => 11,
        "cachedremoteinteractive" => 12,
        "cachedunlock" => 13,
        _ => 99,
    };
    Some((id, t.to_owned()))
}

/// Status and severity of a logon's `ActionType`.
pub(super) fn logon_outcome(action: Option<&str>) -> (u8, u8) {
    match action.map(str::to_ascii_lowercase).as_deref() {
        Some("logonsuccess") => (1, 1),
        Some("logonfailed") => (2, 2),
        _ => (0, 1),
    }
}

/// The two ends of a logon: the device table logs the device signed in to, the identity
/// table the client and the domain controller.
pub(super) struct Endpoints<'r> {
    pub src_ip: Option<&'r str>,
    pub src_port: Option<i64>,
    pub src_host: Option<&'r str>,
    pub dst_host: Option<&'r str>,
    pub dst_ip: Option<&'r str>,
    pub dst_port: Option<i64>,
}

pub(super) fn logon_endpoints<'r>(r: &'r Row<'_>, device_table: bool) -> Endpoints<'r> {
    if device_table {
        Endpoints {
            src_ip: r.RemoteIP.get(),
            src_port: r.RemotePort.i64(),
            src_host: r.RemoteDeviceName.get(),
            dst_host: r.DeviceName.get(),
            dst_ip: None,
            dst_port: None,
        }
    } else {
        Endpoints {
            src_ip: r.IPAddress.get(),
            src_port: r.Port.i64(),
            src_host: r.DeviceName.get(),
            dst_host: r.DestinationDeviceName.get(),
            dst_ip: r.DestinationIPAddress.get(),
            dst_port: r.DestinationPort.i64(),
        }
    }
}

/// The product that logs a logon: Defender for Endpoint (the device table) or for Identity.
pub(super) fn logon_product(device_table: bool) -> &'static str {
    if device_table {
        "Microsoft Defender for Endpoint"
    } else {
        "Microsoft Defender for Identity"
    }
}

/// `<ActionType> by <user>[ to <application>]`.
pub(super) fn logon_message(r: &Row<'_>, who: &str) -> String {
    format!(
        "{} by {who}{}",
        r.ActionType.get().unwrap_or("Logon"),
        r.Application.get().map(|a| format!(" to {a}")).unwrap_or_default()
    )
}

pub(crate) fn map_logon(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let (env, r) = parse(raw)?;
    let (time, original) = ctx.pick_time(&[("Timestamp", &r.Timestamp), ("time", &env.time)])?;
    let tenant = env.tenant();
    let t = tenant.as_deref();
    let category: &str = &ctx.meta.category;
    let device_table = category == "AdvancedHunting-DeviceLogonEvents";
    let mut d = Draft::new(Class::Authentication, time, logon_product(device_table));
    d.feature = category.to_owned();
    d.original_time = Some(original.to_owned());
    d.activity_id = 1;
    d.uid = uid_of(&[
        category,
        t.unwrap_or(""),
        r.ReportId.get().unwrap_or_default(),
        r.DeviceId.get().or(r.DeviceName.get()).unwrap_or_default(),
        original,
    ]);
    let action = r.ActionType.get();
    let (status_id, severity) = logon_outcome(action);
    d.status_id = Some(status_id);
    d.severity_id = severity;
    d.body.s("status_detail", r.FailureReason.get());

    let mut user = account(ctx, t, &r);
    if user.is_empty() {
        user.c("name", "unknown").v("type_id", 0);
    }
    observe_user(&mut d.observables, "user", &user);
    let who = user.get_str("name").unwrap_or("unknown").to_owned();
    d.body.o("user", user);

    let Endpoints {
        src_ip,
        src_port,
        src_host,
        dst_host,
        dst_ip,
        dst_port,
    } = logon_endpoints(&r, device_table);
    let mut src = Obj::new();
    src.s("ip", src_ip).i("port", src_port).s("hostname", src_host);
    let mut loc = Obj::new();
    loc.s("country", r.Location.get());
    src.o("location", loc).s("isp", r.ISP.get());
    d.body.o("src_endpoint", src);
    let mut dst = Obj::new();
    dst.s("hostname", dst_host).s("ip", dst_ip).i("port", dst_port);
    if device_table {
        dst.s("uid", r.DeviceId.get());
    }
    d.body.o("dst_endpoint", dst);
    d.observables.add(obs::IP, "src_endpoint.ip", src_ip);
    d.observables.add(obs::IP, "dst_endpoint.ip", dst_ip);
    d.observables.add(obs::HOSTNAME, "src_endpoint.hostname", src_host);
    d.observables.add(obs::HOSTNAME, "dst_endpoint.hostname", dst_host);
    let mut svc = Obj::new();
    svc.s("name", r.Application.get());
    d.body.o("service", svc);

    match r.Protocol.get().map(str::to_ascii_lowercase).as_deref() {
        Some("ntlm") => {
            d.body.v("auth_protocol_id", 1).c("auth_protocol", "NTLM");
        }
        Some("kerberos") => {
            d.body.v("auth_protocol_id", 2).c("auth_protocol", "Kerberos");
        }
        Some("ldap") => {
            d.body.v("auth_protocol_id", 12).c("auth_protocol", "LDAP");
        }
        Some(_) => {
            d.body.v("auth_protocol_id", 99).s("auth_protocol", r.Protocol.get());
        }
        None => {}
    }
    if let Some((id, caption)) = logon_type(r.LogonType.get()) {
        d.body.v("logon_type_id", id).v("logon_type", caption);
        if matches!(id, 3 | 10 | 12) {
            d.body.v("is_remote", true);
        }
    }
    d.body.v("message", logon_message(&r, &who));
    d.tenant = tenant;
    env.unmapped_into(&mut d.unmapped);
    d.unmapped
        .s("ActionType", action)
        .s("ReportId", r.ReportId.get())
        .s("DeviceType", r.DeviceType.get())
        .s("OSPlatform", r.OSPlatform.get())
        .s("TargetDeviceName", r.TargetDeviceName.get())
        .s("TargetAccountDisplayName", r.TargetAccountDisplayName.get())
        .s("IsLocalAdmin", r.IsLocalAdmin.get())
        .s("LogonId", r.LogonId.get())
        .embedded("AdditionalFields", r.AdditionalFields);
    Ok(d)
}
