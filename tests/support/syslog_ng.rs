//! A real syslog-ng (Debian package syslog-ng-core) for the syslog sink tests: listens on
//! 127.0.0.1 free ports for UDP and TCP (RFC 5424, octet counting), TCP with LF framing
//! (RFC 3164) and TLS (RFC 5425, client certificate required), and writes every message as
//! received (`$RAWMSG`, without framing) to one file per listener. A test CA, server and
//! client certificates are made with `rcgen`.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `syslog-ng` is installed (`.ci/run` installs it).
pub fn available() -> bool {
    Command::new("syslog-ng")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// PEM files of a test PKI, written to a directory.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here (verification must fail with it).
    pub other_ca: PathBuf,
}

impl Pki {
    pub fn make(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
        let ca_params = || {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, "m365-forwarder test CA");
            p
        };
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params().self_signed(&ca_key).unwrap();
        let other_key = KeyPair::generate().unwrap();
        let other = ca_params().self_signed(&other_key).unwrap();
        let leaf = |purpose: ExtendedKeyUsagePurpose, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            p.subject_alt_names
                .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![purpose];
            let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(ExtendedKeyUsagePurpose::ServerAuth, "localhost");
        let (client_cert, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth, "forwarder");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &other.pem()),
        }
    }
}

pub struct SyslogNg {
    dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
    pub udp: u16,
    pub tcp: u16,
    pub tcp_lf: u16,
    pub tls: u16,
    pub pki: Pki,
}

impl Drop for SyslogNg {
    fn drop(&mut self) {
        self.kill();
    }
}

impl SyslogNg {
    /// Starts syslog-ng with its files under `dir`; waits until it listens.
    pub fn start(dir: &Path) -> SyslogNg {
        std::fs::create_dir_all(dir.join("persist")).unwrap();
        let pki = Pki::make(dir);
        let (udp, tcp, tcp_lf, tls) = (free_udp(), free_tcp(), free_tcp(), free_tcp());
        let out = |n: &str| dir.join(format!("out-{n}.log")).display().to_string();
        let conf = format!(
            r#"@version: 3.38
options {{ keep-hostname(yes); stats-freq(0); log-msg-size(131072); flush-lines(1); time-reopen(1); log-fifo-size(100000); }};
source s_udp {{ syslog(ip(127.0.0.1) port({udp}) transport("udp") flags(store-raw-message) so-rcvbuf(8388608) log-msg-size(131072)); }};
source s_tcp {{ syslog(ip(127.0.0.1) port({tcp}) transport("tcp") flags(store-raw-message) log-msg-size(131072) log-iw-size(100000) max-connections(10)); }};
source s_lf {{ network(ip(127.0.0.1) port({tcp_lf}) transport("tcp") flags(store-raw-message) log-msg-size(131072) log-iw-size(100000)); }};
source s_tls {{ syslog(ip(127.0.0.1) port({tls}) transport("tls") flags(store-raw-message) log-msg-size(131072) log-iw-size(100000)
    tls(key-file("{skey}") cert-file("{scert}") ca-file("{ca}") peer-verify(required-trusted))); }};
destination d_udp {{ file("{o_udp}" template("$RAWMSG\n")); }};
destination d_tcp {{ file("{o_tcp}" template("$RAWMSG\n")); }};
destination d_lf {{ file("{o_lf}" template("$RAWMSG\n")); }};
destination d_tls {{ file("{o_tls}" template("$RAWMSG\n")); }};
log {{ source(s_udp); destination(d_udp); }};
log {{ source(s_tcp); destination(d_tcp); }};
log {{ source(s_lf); destination(d_lf); }};
log {{ source(s_tls); destination(d_tls); }};
"#,
            skey = pki.server_key.display(),
            scert = pki.server_cert.display(),
            ca = pki.ca.display(),
            o_udp = out("udp"),
            o_tcp = out("tcp"),
            o_lf = out("lf"),
            o_tls = out("tls"),
        );
        let conf_path = dir.join("syslog-ng.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut s = SyslogNg {
            dir: dir.to_path_buf(),
            conf: conf_path,
            child: None,
            udp,
            tcp,
            tcp_lf,
            tls,
            pki,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let d = &self.dir;
        let child = Command::new("syslog-ng")
            .arg("-F")
            .arg("-f")
            .arg(&self.conf)
            .arg("-R")
            .arg(d.join("persist/syslog-ng.persist"))
            .arg("-p")
            .arg(d.join("syslog-ng.pid"))
            .arg("-c")
            .arg(d.join("syslog-ng.ctl"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("syslog-ng.stderr")).unwrap())
            .spawn()
            .expect("start syslog-ng");
        self.child = Some(child);
        let start = Instant::now();
        for port in [self.tcp, self.tcp_lf, self.tls] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!(
                        "syslog-ng exited ({st}): {}",
                        std::fs::read_to_string(d.join("syslog-ng.stderr")).unwrap_or_default()
                    );
                }
                assert!(start.elapsed() < Duration::from_secs(20), "syslog-ng did not listen");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGTERM (or SIGKILL when `hard`), wait for the exit.
    pub fn stop(&mut self, hard: bool) {
        if let Some(mut c) = self.child.take() {
            super::unsafe_kill(c.id(), if hard { 9 } else { 15 });
            let _ = c.wait();
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, hard: bool) {
        self.stop(hard);
        self.spawn();
    }

    /// What the `udp`, `tcp`, `lf` or `tls` listener wrote, one message per line.
    pub fn received(&self, listener: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!("out-{listener}.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `pred` holds for the lines of `listener`.
    pub fn wait_for(&self, listener: &str, timeout: Duration, mut pred: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let l = self.received(listener);
            if pred(&l) || start.elapsed() > timeout {
                return l;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
