//! Azurite, the Azure Blob Storage emulator, for the blob checkpoint store tests: started on a
//! free loopback port with a temporary location, stopped when dropped. `.ci/run` installs it
//! (npm, into `$HOME/.cache/m365fwd/azurite`); without it the tests fail and say so.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The well-known development account of Azurite and its key (public, emulator only).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `azurite-blob` from `AZURITE_BLOB`, the PATH, or the CI install prefix.
fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AZURITE_BLOB") {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("azurite-blob");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/m365fwd/azurite/bin/azurite-blob");
    p.is_file().then_some(p)
}

impl Azurite {
    pub fn start() -> Azurite {
        let bin = find().unwrap_or_else(|| {
            panic!(
                "azurite-blob not found: install it with `npm install -g --prefix $HOME/.cache/m365fwd/azurite azurite@3.35.0` \
                 (.ci/run does), put it on PATH, or set AZURITE_BLOB"
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("azurite.log")).unwrap();
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .arg("--location")
            .arg(dir.path())
            .args(["--disableTelemetry", "--skipApiVersionCheck", "--silent"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut a = Azurite { port, child, _dir: dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = a.child.try_wait() {
                let log = std::fs::read_to_string(a._dir.path().join("azurite.log")).unwrap_or_default();
                panic!("azurite-blob exited with {status}:\n{log}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "azurite-blob did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// An account SAS for the blob service (all resource types; read, write, delete, list,
    /// add, create), signed with the development key as the Storage REST reference describes
    /// (version 2019-12-12 string-to-sign).
    pub fn account_sas(&self) -> String {
        use base64::Engine as _;
        let (sp, ss, srt, se, sv) = ("rwdlac", "b", "sco", "2099-01-01T00:00:00Z", "2019-12-12");
        let sts = format!("{ACCOUNT}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n\n{sv}\n");
        let key = base64::engine::general_purpose::STANDARD.decode(KEY).unwrap();
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let sig = base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&k, sts.as_bytes()));
        let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        format!("sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={se}&sig={sig}")
    }

    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={};",
            self.endpoint()
        )
    }
}
