//! The forwarder binary under test as one handle: its config written to a test directory,
//! `run` started with JSON logs to a file (restartable with the same config and log), stopped
//! with SIGTERM or SIGKILL, and killed when the handle drops (so a failing test leaves no
//! process behind).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::{bin, unsafe_kill, wait_until};

pub struct Forwarder {
    /// `forwarder.toml` in the test directory.
    pub config: PathBuf,
    /// `run.log` in the test directory: the process's stderr (JSON log lines).
    pub log: PathBuf,
    env: Vec<(String, String)>,
    capture_stdout: bool,
    child: Option<Child>,
}

impl Forwarder {
    /// Write `config_text` to `dir/forwarder.toml`; nothing runs yet (see [`Forwarder::spawn`]).
    pub fn write(dir: &Path, config_text: &str) -> Forwarder {
        let config = dir.join("forwarder.toml");
        std::fs::write(&config, config_text).unwrap();
        Forwarder {
            config,
            log: dir.join("run.log"),
            env: Vec::new(),
            capture_stdout: false,
            child: None,
        }
    }

    /// Write the config and start `run` on it.
    pub fn start(dir: &Path, config_text: &str) -> Forwarder {
        let mut f = Forwarder::write(dir, config_text);
        f.spawn();
        f
    }

    /// An environment variable for every command started from here on.
    pub fn env(mut self, key: &str, value: &str) -> Forwarder {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Pipe the process's stdout (read with [`Forwarder::wait_with_output`]) instead of dropping it.
    pub fn capture_stdout(mut self) -> Forwarder {
        self.capture_stdout = true;
        self
    }

    /// The binary with this handle's environment and `args`, then `-c <config>` (for `validate`
    /// and the like).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args).arg("-c").arg(&self.config);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Start `run` (again): the log file starts anew. The previous process must have ended.
    pub fn spawn(&mut self) {
        if let Some(c) = self.child.as_mut() {
            assert!(c.try_wait().unwrap().is_some(), "the forwarder is still running");
        }
        let mut cmd = self.command(&["--log-format", "json", "run"]);
        let stdout = if self.capture_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        cmd.stdout(stdout).stderr(std::fs::File::create(&self.log).unwrap());
        self.child = Some(cmd.spawn().unwrap());
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the forwarder was started")
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("the forwarder was started").id()
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child().try_wait()
    }

    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child().wait()
    }

    /// Wait for the process to end and take what it wrote to stdout (see
    /// [`Forwarder::capture_stdout`]).
    pub fn wait_with_output(&mut self) -> std::io::Result<Output> {
        self.child.take().expect("the forwarder was started").wait_with_output()
    }

    /// SIGTERM (a graceful stop); does not wait.
    pub fn terminate(&self) {
        unsafe_kill(self.id(), 15);
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(&mut self) {
        unsafe_kill(self.id(), 9);
        let _ = self.child().wait();
    }

    /// Whether the process ended within `timeout` (polling, blocking the thread).
    pub fn exits_within(&mut self, timeout: Duration) -> bool {
        let child = self.child();
        wait_until(timeout, || child.try_wait().unwrap().is_some())
    }

    /// SIGTERM, then wait up to 30 s without blocking the runtime; the exit must be a success
    /// (else the test fails with the log's tail).
    pub async fn stop(&mut self) {
        self.terminate();
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}\n{}", self.log_tail(20));
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The whole log so far (empty if there is none).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log_text();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILL and reap the process if it was started and still runs; otherwise nothing.
    pub fn kill_if_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.kill_if_running();
    }
}
