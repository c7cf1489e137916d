//! Running programs: argument vectors only (never a shell string), a timeout on every run, captured output,
//! and redaction of secrets in everything that is logged or returned in an error.
//!
//! A command is declared as either reading the host or changing the running host (`sysctl`, `modprobe`,
//! `swapoff`, `mount`, `iptables`, `systemctl start`, ...). In a sandbox root the latter are never executed:
//! they are recorded (see [`super::sandbox`]) so a test run cannot change the machine it runs on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// Default timeout for a command that does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What running a command does to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Effect {
    /// Only reads state (version probes, `azcmagent show`, `systemctl is-active`).
    ReadOnly,
    /// Changes the running host (kernel, mounts, services, firewall). Recorded instead of run in a sandbox.
    MutatesHost,
}

/// One program invocation.
#[derive(Clone)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Bytes written to the child's stdin (how secrets are handed to children; never argv).
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    pub effect: Effect,
    pub cwd: Option<PathBuf>,
    /// Strings replaced by `***` in anything logged or reported (output included).
    pub redact: Vec<String>,
}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("argv", &self.display())
            .field("effect", &self.effect)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CommandSpec {
    pub fn new(program: impl Into<String>) -> Self {
        CommandSpec {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
            effect: Effect::ReadOnly,
            cwd: None,
            redact: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub fn mutates_host(mut self) -> Self {
        self.effect = Effect::MutatesHost;
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    pub fn redact(mut self, secret: impl Into<String>) -> Self {
        let s = secret.into();
        if !s.is_empty() {
            self.redact.push(s);
        }
        self
    }

    /// The argv as one line for logs, with secrets redacted.
    pub fn display(&self) -> String {
        let mut parts = vec![self.program.clone()];
        parts.extend(self.args.iter().map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("{a:?}")
            } else {
                a.clone()
            }
        }));
        self.scrub(&parts.join(" "))
    }

    /// Replace every secret in `text` by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.redact {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}

/// What a finished command produced (already redacted).
#[derive(Debug, Clone, Default)]
pub struct CommandOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// True when the command was recorded in a sandbox instead of being run.
    pub recorded: bool,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{command}` could not be started: {source}{hint}")]
    Spawn {
        command: String,
        hint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    Timeout { command: String, timeout: Duration },
    #[error("`{command}` failed with exit code {code}: {stderr}")]
    Failed {
        command: String,
        code: i32,
        stderr: String,
    },
}

/// Run `spec` for real. Output is captured; the exit code is returned, not judged (see [`check`]).
pub async fn run_real(spec: &CommandSpec) -> Result<CommandOutput, CommandError> {
    tracing::debug!(command = %spec.display(), "running");
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn {
        command: spec.display(),
        hint: if source.kind() == std::io::ErrorKind::NotFound {
            format!(" (is `{}` installed and on PATH?)", spec.program)
        } else {
            String::new()
        },
        source,
    })?;
    if let (Some(bytes), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        // A child that exits without reading stdin is not our error; its exit code tells.
        let _ = stdin.write_all(&bytes).await;
        drop(stdin);
    }
    let out = match tokio::time::timeout(spec.timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|source| CommandError::Spawn {
            command: spec.display(),
            hint: String::new(),
            source,
        })?,
        Err(_) => {
            return Err(CommandError::Timeout {
                command: spec.display(),
                timeout: spec.timeout,
            })
        }
    };
    let output = CommandOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: spec.scrub(&String::from_utf8_lossy(&out.stdout)),
        stderr: spec.scrub(&String::from_utf8_lossy(&out.stderr)),
        recorded: false,
    };
    tracing::trace!(command = %spec.display(), code = output.code, stdout = %output.stdout, stderr = %output.stderr, "finished");
    Ok(output)
}

/// Turn a non-zero exit into an error carrying the last lines of stderr (or stdout when stderr is empty).
pub fn check(spec: &CommandSpec, out: CommandOutput) -> Result<CommandOutput, CommandError> {
    if out.success() {
        return Ok(out);
    }
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let tail: Vec<&str> = text.trim().lines().rev().take(10).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(CommandError::Failed {
        command: spec.display(),
        code: out.code,
        stderr: tail.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_redacts_and_quotes() {
        let spec = CommandSpec::new("azcmagent")
            .args(["connect", "--access-token", "s3cr3t", "a b"])
            .redact("s3cr3t");
        assert_eq!(
            spec.display(),
            "azcmagent connect --access-token *** \"a b\""
        );
        assert!(!format!("{spec:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let spec = CommandSpec::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run_real(&spec).await.unwrap();
        assert_eq!(out.code, 3);
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        let err = check(&spec, out).unwrap_err().to_string();
        assert!(err.contains("exit code 3") && err.contains("err"), "{err}");
    }

    #[tokio::test]
    async fn stdin_carries_secrets_and_output_is_scrubbed() {
        let spec = CommandSpec::new("cat")
            .stdin(b"token-123".to_vec())
            .redact("token-123");
        let out = run_real(&spec).await.unwrap();
        assert_eq!(out.stdout, "***");
    }

    #[tokio::test]
    async fn timeout_kills_the_child() {
        let spec = CommandSpec::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(100));
        let started = std::time::Instant::now();
        let err = run_real(&spec).await.unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }));
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[tokio::test]
    async fn missing_program_names_it() {
        let err = run_real(&CommandSpec::new("definitely-not-a-program-xyz"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("definitely-not-a-program-xyz") && err.contains("PATH"),
            "{err}"
        );
    }
}
