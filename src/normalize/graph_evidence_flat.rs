//! What the attribute encoders read of a Graph alert's evidence list, found without building
//! the OCSF evidences (lean normalization; see `normalize::direct`): the source and
//! destination IPs, the source's location, the first file and URL, the device's host name,
//! and the alert's subject, as `encode::flat_of` resolves them from the evidences.

use bytestring::ByteString;
use serde_json::value::RawValue;

use super::super::direct::t;
use super::super::Ctx;
use super::{device_obj, join_path, walk, FileDetails, Item, PickedUser};

/// The encoders look for an IP, a file or a URL in the first 32 evidences only.
const LOOKED_AT: usize = 32;

/// A location as `location_obj` writes it: city, country, coordinates.
#[derive(Default)]
pub(crate) struct FlatLocation {
    pub city: Option<ByteString>,
    pub country: Option<ByteString>,
    pub lat: Option<f64>,
    pub long: Option<f64>,
}

/// What an alert's evidence list gives its flat form.
#[derive(Default)]
pub(crate) struct EvidenceFacts {
    /// The alert's subject (before restoration from the caches).
    pub user: Option<PickedUser>,
    /// The first evidence with a source IP (an IP evidence not in the destination role, an
    /// analysed message's sender), and that IP.
    src: Option<ByteString>,
    pub dst_ip: Option<ByteString>,
    /// The location of the evidence with the source IP, else of the first evidence.
    src_location: Option<FlatLocation>,
    first_location: Option<FlatLocation>,
    /// Name, path and hash (SHA-256, else SHA-1, else MD5) of the first file evidence,
    /// else of the first process's image.
    file: Option<[Option<ByteString>; 3]>,
    process_file: Option<[Option<ByteString>; 3]>,
    url: Option<ByteString>,
    email_url: Option<ByteString>,
    /// The first device evidence that names anything: its host name.
    device: Option<Option<ByteString>>,
}

impl EvidenceFacts {
    pub fn src_ip(&self) -> Option<ByteString> {
        self.src.clone()
    }

    /// The source's location: that of the evidence with the source IP, else of the first.
    pub fn location(&self) -> Option<&FlatLocation> {
        match self.src {
            Some(_) => self.src_location.as_ref(),
            None => self.first_location.as_ref(),
        }
    }

    /// The file: of a file evidence, else of a process's image.
    pub fn file(&self) -> Option<&[Option<ByteString>; 3]> {
        self.file.as_ref().or(self.process_file.as_ref())
    }

    /// A URL evidence's, else an analysed message's first URL.
    pub fn url(&self) -> Option<ByteString> {
        self.url.clone().or_else(|| self.email_url.clone())
    }

    pub fn host(&self) -> Option<ByteString> {
        self.device.clone().flatten()
    }

    fn note(&mut self, i: usize, kind: &str, it: &Item<'_>) {
        if kind == "deviceEvidence" && self.device.is_none() {
            let dv = device_obj(it);
            if !dv.is_empty() {
                self.device = Some(t(it.dns_name.get().or(it.host_name.get())));
            }
        }
        if i >= LOOKED_AT {
            return;
        }
        match kind {
            "ipEvidence" => {
                let dst = it.roles.0.iter().any(|r| r.is("destination"));
                let ip = it.ip.get();
                if dst {
                    if self.dst_ip.is_none() {
                        self.dst_ip = t(ip);
                    }
                    return;
                }
                let loc = || {
                    let l = it.location.as_ref();
                    FlatLocation {
                        city: t(l.and_then(|l| l.city.get())),
                        country: t(it.country.get().or(l.and_then(|l| l.country_name.get()))),
                        lat: l.and_then(|l| l.latitude.f64()),
                        long: l.and_then(|l| l.longitude.f64()),
                    }
                };
                if i == 0 {
                    self.first_location = Some(loc());
                }
                if let (None, Some(ip)) = (&self.src, ip) {
                    self.src = t(Some(ip));
                    self.src_location = Some(loc());
                }
            }
            "analyzedMessageEvidence" => {
                if let (None, Some(ip)) = (&self.src, it.sender_ip.get()) {
                    self.src = t(Some(ip));
                }
                if self.email_url.is_none() {
                    self.email_url = t(it.urls.0.iter().find_map(|u| u.get()));
                }
            }
            "fileEvidence" | "fileHashEvidence" if self.file.is_none() => {
                self.file = it.file_details.as_ref().and_then(file);
            }
            "processEvidence" if self.process_file.is_none() => {
                self.process_file = it.image_file.as_ref().and_then(file);
            }
            "urlEvidence" if self.url.is_none() => self.url = t(it.url.get()),
            _ => {}
        }
    }
}

/// Name, path and hash of a file that names one of them.
fn file(f: &FileDetails<'_>) -> Option<[Option<ByteString>; 3]> {
    let name = t(f.name.get());
    let path = join_path(f.path.get(), f.name.get()).map(ByteString::from);
    let hash = t(f.sha256.get().or(f.sha1.get()).or(f.md5.get()));
    (name.is_some() || path.is_some() || hash.is_some()).then_some([name, path, hash])
}

/// [`super::map_evidence`] for the flat form: the same users learned and the same subject
/// picked, no evidence built.
pub(crate) fn evidence_facts(ctx: &Ctx<'_>, tenant: Option<&str>, items: &[&RawValue]) -> EvidenceFacts {
    let mut facts = EvidenceFacts::default();
    facts.user = walk(ctx, tenant, items, |i, _, item| {
        if let Some((kind, it)) = item {
            facts.note(i, kind, it);
        }
    });
    facts
}
