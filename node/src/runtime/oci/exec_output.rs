//! The output and exit code of a command run in a Linux container for the kubelet itself (exec probes,
//! exec lifecycle hooks): both streams read (at most [`OUTPUT_CAP`] bytes kept, the rest drained so the
//! process never blocks on a full pipe), bounded by a timeout after which the process is killed.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::runtime::{ExecOutput, RuntimeError};
use crate::streaming::Process;

/// How much of a command's output is kept (the kubelet keeps 10 KiB of a probe's).
pub const OUTPUT_CAP: usize = 10 * 1024;

/// Waits for `process` (its outputs read to their end) for at most `timeout`.
pub async fn collect(process: Process, timeout: Duration) -> Result<ExecOutput, RuntimeError> {
    let Process { stdout, stderr, control, exited, .. } = process;
    let run = async move {
        let (out, err) = tokio::join!(read_capped(stdout), read_capped(stderr));
        let code = exited.await.map_err(|_| RuntimeError::Other("the command's exit was lost".into()))?;
        let code = code.map_err(RuntimeError::Other)?;
        let mut output = out;
        output.extend_from_slice(&err);
        output.truncate(OUTPUT_CAP);
        Ok(ExecOutput { exit_code: code, output: String::from_utf8_lossy(&output).into_owned() })
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => {
            control.kill().await;
            Err(RuntimeError::Other(format!("command timed out after {}s", timeout.as_secs())))
        }
    }
}

/// Everything `from` gives until its end, keeping the first [`OUTPUT_CAP`] bytes.
async fn read_capped(from: Option<Box<dyn AsyncRead + Send + Unpin>>) -> Vec<u8> {
    let Some(mut from) = from else { return Vec::new() };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_capped_but_read_to_the_end() {
        let big = vec![b'x'; OUTPUT_CAP * 3];
        let reader: Box<dyn AsyncRead + Send + Unpin> = Box::new(std::io::Cursor::new(big));
        assert_eq!(read_capped(Some(reader)).await.len(), OUTPUT_CAP);
        assert!(read_capped(None).await.is_empty());
    }
}
