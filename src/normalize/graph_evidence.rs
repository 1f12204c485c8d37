//! Graph security alert evidence (`alertEvidence` subtypes) → OCSF `evidences[]`,
//! `observables`, the alert's primary user (compromised/attacked first) and device.
//! Unknown evidence kinds pass through whole in `evidences[].data`.

use serde_json::value::RawValue;
use serde_json::Value;

use super::common::{hash_obj, join_path, location_obj, obs, os_obj, time_ms, user_obj, Obj, Observables, UserType};
use super::Ctx;

#[path = "graph_evidence_item.rs"]
mod item;
pub(crate) use item::UserAccount;
use item::{FileDetails, Item};

/// The user chosen as the alert's subject.
#[derive(Debug, Default, Clone)]
pub(crate) struct PickedUser {
    pub uid: Option<String>,
    pub upn: Option<String>,
    pub account_name: Option<String>,
    pub display_name: Option<String>,
    pub domain: Option<String>,
    pub sid: Option<String>,
}

impl PickedUser {
    /// The user an evidence's `userAccount` names.
    fn of_account(a: &UserAccount<'_>) -> Self {
        PickedUser {
            uid: a.aad_id.owned(),
            upn: a.upn.owned(),
            account_name: a.account_name.owned(),
            display_name: a.display_name.owned(),
            domain: a.domain.owned(),
            sid: a.sid.owned(),
        }
    }
}

/// Everything the evidence list contributes to an alert.
#[derive(Debug, Default)]
pub(crate) struct EvidenceOut {
    pub evidences: Vec<Value>,
    pub observables: Observables,
    pub user: Option<PickedUser>,
    pub device: Option<Obj>,
}

/// `verdict` → OCSF evidence `verdict_id` (and caption for 99).
fn verdict(v: Option<&str>) -> (u8, String) {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("unknown") => (0, "Unknown".into()),
        Some("suspicious") => (4, "Suspicious".into()),
        Some("malicious") => (2, "True Positive".into()),
        Some("nothreatsfound") => (5, "Benign".into()),
        Some(_) => (99, v.unwrap_or_default().to_owned()),
    }
}

fn account_user(a: &UserAccount<'_>) -> Obj {
    account_obj(
        a.aad_id.get(),
        a.upn.get().or(a.account_name.get()),
        a.display_name.get(),
        a.domain.get(),
        a.sid.get(),
    )
}

/// The OCSF user of an account: object id, UPN (else account name), display name, domain,
/// and the SID as `uid_alt`.
pub(crate) fn account_obj(
    uid: Option<&str>,
    name: Option<&str>,
    full_name: Option<&str>,
    domain: Option<&str>,
    sid: Option<&str>,
) -> Obj {
    let mut u = user_obj(uid, name, full_name, domain, UserType::User);
    u.s("uid_alt", sid);
    u
}

fn file_obj(f: &FileDetails<'_>) -> Obj {
    let mut o = Obj::new();
    let mut hashes = Vec::new();
    if let Some(h) = f.md5.get() {
        hashes.push(hash_obj(1, h));
    }
    if let Some(h) = f.sha1.get() {
        hashes.push(hash_obj(2, h));
    }
    if let Some(h) = f.sha256.get() {
        hashes.push(hash_obj(3, h));
    }
    o.s("name", f.name.get())
        .s("path", join_path(f.path.get(), f.name.get()).as_deref())
        .i("size", f.size.i64())
        .s("company_name", f.publisher.get())
        .arr("hashes", hashes);
    if o.has("name") || o.has("path") {
        o.v("type_id", 1).c("type", "Regular File");
    }
    o
}

fn observe_file(obs_: &mut Observables, path: &str, f: &FileDetails<'_>) {
    obs_.add(obs::FILE_NAME, format!("{path}.name"), f.name.get());
    for h in [&f.sha256, &f.sha1, &f.md5] {
        obs_.add(obs::HASH, format!("{path}.hashes"), h.get());
    }
}

fn device_obj(it: &Item<'_>) -> Obj {
    let mut dv = Obj::new();
    dv.s("uid", it.mde_device_id.get())
        .s("uid_alt", it.aad_device_id.get())
        .s("hostname", it.dns_name.get().or(it.host_name.get()))
        .s("name", it.host_name.get())
        .s("domain", it.dns_domain.get().or(it.nt_domain.get()))
        .s("ip", it.last_ip.get());
    let mut os = os_obj(it.os_platform.get());
    if !os.is_empty() {
        os.s("build", it.os_build.get()).s("version", it.version.get());
    }
    dv.o("os", os);
    if !dv.is_empty() {
        dv.v("type_id", 0);
    }
    dv
}

/// The user an evidence names: its `userAccount`, else its account's.
fn user_account<'x, 'a>(it: &'x Item<'a>) -> Option<&'x UserAccount<'a>> {
    it.user_account
        .as_ref()
        .or_else(|| it.account.as_ref().and_then(|a| a.user_account.as_ref()))
}

/// The alert's subject among its evidence: a user in a compromised or attacked role, else
/// the first user evidence, else (Defender for Office 365 alerts name the recipient as a
/// mailbox, not a user evidence) the first mailbox that names someone.
#[derive(Default)]
struct UserPick {
    first_user: Option<PickedUser>,
    role_user: Option<PickedUser>,
    mailbox_user: Option<PickedUser>,
}

impl UserPick {
    fn note(&mut self, kind: &str, it: &Item<'_>) {
        match kind {
            "userEvidence" => {
                if let Some(a) = user_account(it) {
                    let picked = PickedUser::of_account(a);
                    let key_role = it.roles.0.iter().any(|r| r.is("compromised") || r.is("attacked"));
                    if key_role && self.role_user.is_none() {
                        self.role_user = Some(picked.clone());
                    }
                    if self.first_user.is_none() {
                        self.first_user = Some(picked);
                    }
                }
            }
            "mailboxEvidence" if self.mailbox_user.is_none() => {
                let mut picked = it.user_account.as_ref().map(PickedUser::of_account).unwrap_or_default();
                picked.upn = picked
                    .upn
                    .or_else(|| it.upn.owned())
                    .or_else(|| it.primary_address.owned());
                picked.display_name = picked.display_name.or_else(|| it.display_name.owned());
                if picked.uid.is_some() || picked.upn.is_some() {
                    self.mailbox_user = Some(picked);
                }
            }
            _ => {}
        }
    }

    fn user(self) -> Option<PickedUser> {
        self.role_user.or(self.first_user).or(self.mailbox_user)
    }
}

/// Reads an alert's evidence list: each item's user is learned into the user cache (before
/// anything is restored) and the alert's subject picked; `each` sees every item with its
/// index, its text and, when it is an evidence object, its kind and fields.
fn walk<'r>(
    ctx: &Ctx<'_>,
    tenant: Option<&str>,
    items: &[&'r RawValue],
    mut each: impl FnMut(usize, &'r RawValue, Option<(&str, &Item<'r>)>),
) -> Option<PickedUser> {
    let mut pick = UserPick::default();
    for (i, raw) in items.iter().enumerate() {
        let Ok(it) = super::json_de::from_str::<Item<'r>>(raw.get()) else {
            each(i, raw, None);
            continue;
        };
        let full_type = it.odata_type.get().unwrap_or("unknown");
        let kind = full_type.rsplit('.').next().unwrap_or(full_type);
        if let Some(a) = user_account(&it) {
            ctx.learn_user(tenant, a.aad_id.get(), a.upn.get(), a.display_name.get());
        }
        pick.note(kind, &it);
        each(i, raw, Some((kind, &it)));
    }
    pick.user()
}

/// Learns the users an alert's evidence list names into the user cache, as
/// [`map_evidence`] does, building nothing.
pub(crate) fn learn_users(ctx: &Ctx<'_>, tenant: Option<&str>, items: &[&RawValue]) {
    walk(ctx, tenant, items, |_, _, _| {});
}

/// Map an alert's evidence list to OCSF evidences and observables, with the alert's user
/// and device.
pub(crate) fn map_evidence(ctx: &Ctx<'_>, tenant: Option<&str>, items: &[&RawValue]) -> EvidenceOut {
    let mut out = EvidenceOut::default();
    out.user = walk(ctx, tenant, items, |i, raw, item| match item {
        Some((kind, it)) => map_item(&mut out, i, kind, it, raw),
        None => {
            let mut e = Obj::new();
            e.ov("data", super::json_de::from_str::<Value>(raw.get()).ok());
            out.evidences.push(e.into_value());
        }
    });
    out
}

/// One evidence object → an OCSF evidence (and its observables, and the alert's device).
fn map_item(out: &mut EvidenceOut, i: usize, kind: &str, it: &Item<'_>, raw: &RawValue) {
    let path = format!("evidences[{i}]");
    let mut e = Obj::new();
    e.v("name", kind);
    let (vid, vcap) = verdict(it.verdict.get());
    e.v("verdict_id", vid).v("verdict", vcap);
    let mut data = Obj::new();
    data.arr("roles", super::common::str_list(it.roles.0.iter()))
        .arr("detailedRoles", super::common::str_list(it.detailed_roles.0.iter()))
        .arr("tags", super::common::str_list(it.tags.0.iter()))
        .s("verdict", it.verdict.get())
        .s("remediationStatus", it.remediation_status.get())
        .s("remediationStatusDetails", it.remediation_details.get())
        .s("detectionStatus", it.detection_status.get())
        .i("created_time", time_ms(&it.created));
    let user_acc = user_account(it);
    match kind {
        "userEvidence" | "cloudLogonSessionEvidence" => {
            if let Some(a) = user_acc {
                let u = account_user(a);
                super::common::observe_user(&mut out.observables, &format!("{path}.user"), &u);
                e.o("user", u);
            }
            data.s("sessionId", it.session_id.get())
                .s("userAgent", it.user_agent.get());
        }
        "ipEvidence" => {
            let mut ep = Obj::new();
            ep.s("ip", it.ip.get());
            let loc = it.location.as_ref();
            ep.o(
                "location",
                location_obj(
                    loc.and_then(|l| l.city.get()),
                    loc.and_then(|l| l.state.get()),
                    it.country.get().or(loc.and_then(|l| l.country_name.get())),
                    loc.and_then(|l| l.latitude.f64()),
                    loc.and_then(|l| l.longitude.f64()),
                ),
            );
            let dst = it.roles.0.iter().any(|r| r.is("destination"));
            let side = if dst { "dst_endpoint" } else { "src_endpoint" };
            out.observables.add(obs::IP, format!("{path}.{side}.ip"), it.ip.get());
            e.o(side, ep);
        }
        "deviceEvidence" => {
            let dv = device_obj(it);
            out.observables.add(
                obs::HOSTNAME,
                format!("{path}.device.hostname"),
                it.dns_name.get().or(it.host_name.get()),
            );
            out.observables
                .add(obs::IP, format!("{path}.device.ip"), it.last_ip.get());
            if out.device.is_none() && !dv.is_empty() {
                out.device = Some(dv.clone());
            }
            e.o("device", dv);
            data.s("riskScore", it.risk_score.get())
                .s("healthStatus", it.health_status.get())
                .s("rbacGroupName", it.rbac_group.get())
                .s("lastExternalIpAddress", it.last_external_ip.get());
        }
        "processEvidence" => {
            let mut p = Obj::new();
            p.i("pid", it.pid.i64())
                .s("cmd_line", it.cmd_line.get())
                .i("created_time", time_ms(&it.process_created));
            if let Some(f) = it.image_file.as_ref() {
                p.o("file", file_obj(f));
                p.s("name", f.name.get());
                observe_file(&mut out.observables, &format!("{path}.process.file"), f);
            }
            let mut parent = Obj::new();
            parent
                .i("pid", it.ppid.i64())
                .i("created_time", time_ms(&it.parent_created));
            if let Some(f) = it.parent_image_file.as_ref() {
                parent.o("file", file_obj(f)).s("name", f.name.get());
            }
            p.o("parent_process", parent);
            if let Some(a) = it.user_account.as_ref() {
                p.o("user", account_user(a));
            }
            out.observables
                .add(obs::COMMAND_LINE, format!("{path}.process.cmd_line"), it.cmd_line.get());
            e.o("process", p);
            let mut dv = Obj::new();
            dv.s("uid", it.mde_device_id.get());
            if !dv.is_empty() {
                dv.v("type_id", 0);
                e.o("device", dv);
            }
        }
        "fileEvidence" | "fileHashEvidence" => {
            if let Some(f) = it.file_details.as_ref() {
                e.o("file", file_obj(f));
                observe_file(&mut out.observables, &format!("{path}.file"), f);
            }
            let mut dv = Obj::new();
            dv.s("uid", it.mde_device_id.get());
            if !dv.is_empty() {
                dv.v("type_id", 0);
                e.o("device", dv);
            }
        }
        "urlEvidence" => {
            let mut u = Obj::new();
            u.s("url_string", it.url.get());
            e.o("url", u);
            out.observables
                .add(obs::URL, format!("{path}.url.url_string"), it.url.get());
        }
        "mailboxEvidence" => {
            let mut u = user_obj(
                it.user_account.as_ref().and_then(|a| a.aad_id.get()),
                it.upn.get().or(it.primary_address.get()),
                it.display_name.get(),
                None,
                UserType::User,
            );
            u.s("email_addr", it.primary_address.get());
            super::common::observe_user(&mut out.observables, &format!("{path}.user"), &u);
            e.o("user", u);
        }
        "analyzedMessageEvidence" => {
            // P1 is the envelope sender (SMTP MAIL FROM), P2 the header From.
            let p1 = it.p1_sender.as_ref().and_then(|s| s.email.get());
            let p2 = it.p2_sender.as_ref().and_then(|s| s.email.get());
            let from = p2.or(p1);
            let mut m = Obj::new();
            m.s("uid", it.network_message_id.get())
                .s("message_uid", it.internet_message_id.get())
                .s("subject", it.subject.get())
                .s("from", from)
                .s("smtp_from", p1);
            if let Some(r) = it.recipient.get() {
                m.v("to", vec![Value::from(r)]);
            }
            let mut urls = Vec::new();
            for (j, url) in it.urls.0.iter().filter_map(|u| u.get()).enumerate() {
                let mut u = Obj::new();
                u.s("url_string", Some(url));
                urls.push(u.into_value());
                out.observables
                    .add(obs::URL, format!("{path}.email.urls[{j}].url_string"), Some(url));
            }
            m.arr("urls", urls);
            for (who, addr) in [("from", from), ("to", it.recipient.get())] {
                out.observables.add(obs::EMAIL, format!("{path}.email.{who}"), addr);
            }
            e.o("email", m);
            data.s("deliveryAction", it.delivery_action.get())
                .s("deliveryLocation", it.delivery_location.get())
                .s("antiSpamDirection", it.anti_spam_direction.get())
                .arr("threats", super::common::str_list(it.threats.0.iter()))
                .i("attachmentsCount", it.attachments_count.i64());
            let mut src = Obj::new();
            src.s("ip", it.sender_ip.get());
            e.o("src_endpoint", src);
            out.observables
                .add(obs::IP, format!("{path}.src_endpoint.ip"), it.sender_ip.get());
        }
        "oauthApplicationEvidence" | "cloudApplicationEvidence" | "servicePrincipalEvidence" => {
            let mut a = Obj::new();
            a.s("app_uid", it.app_id.get())
                .s("app_name", it.display_name.get().or(it.sp_name.get()));
            if kind == "servicePrincipalEvidence" {
                a.o(
                    "user",
                    user_obj(
                        it.sp_object_id.get(),
                        it.sp_name.get(),
                        None,
                        None,
                        UserType::ServicePrincipal,
                    ),
                );
            }
            e.o("actor", a);
        }
        _ => {
            if let Ok(Value::Object(mut all)) = super::json_de::from_str::<Value>(raw.get()) {
                all.remove("@odata.type");
                for (k, v) in all {
                    data.insert_absent(k, v);
                }
            }
        }
    }
    e.o("data", data);
    out.evidences.push(e.into_value());
}

#[path = "graph_evidence_flat.rs"]
mod flat;
pub(crate) use flat::evidence_facts;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(Some("suspicious")).0, 4);
        assert_eq!(verdict(Some("malicious")).0, 2);
        assert_eq!(verdict(Some("noThreatsFound")).0, 5);
        assert_eq!(verdict(None).0, 0);
        assert_eq!(verdict(Some("compromised")), (99, "compromised".to_owned()));
    }
}
