//! The Kubernetes channel protocol over WebSocket (`v4.channel.k8s.io`, `v5.channel.k8s.io`): every
//! binary message starts with its channel byte. 0 stdin, 1 stdout, 2 stderr, 3 the error channel (one
//! `metav1.Status` JSON when the process ended), 4 terminal resize (`{"Width":..,"Height":..}`), and
//! in v5 255 "close channel" (`[255, n]`: the client closed its stream `n`, i.e. stdin's EOF).

use serde::Deserialize;

/// The subprotocols served, most preferred first.
pub const PROTOCOLS: [&str; 2] = [V5, "v4.channel.k8s.io"];
/// The protocol with stdin half-close.
pub const V5: &str = "v5.channel.k8s.io";

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// What a client's binary message asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Stdin(&'a [u8]),
    /// The client closed its side of stdin.
    CloseStdin,
    Resize {
        width: u16,
        height: u16,
    },
    /// Empty, an unknown channel, a malformed resize: nothing to do.
    Ignored,
}

/// A terminal resize as kubectl sends it (on the WebSocket resize channel or SPDY's resize stream).
#[derive(Deserialize)]
pub(super) struct Size {
    #[serde(rename = "Width")]
    pub(super) width: u16,
    #[serde(rename = "Height")]
    pub(super) height: u16,
}

/// Parses one binary message from the client.
pub fn incoming(message: &[u8]) -> Incoming<'_> {
    match message.split_first() {
        Some((&STDIN, data)) => Incoming::Stdin(data),
        Some((&CLOSE, [STDIN, ..])) => Incoming::CloseStdin,
        Some((&RESIZE, json)) => match serde_json::from_slice::<Size>(json) {
            Ok(s) => Incoming::Resize { width: s.width, height: s.height },
            Err(_) => Incoming::Ignored,
        },
        _ => Incoming::Ignored,
    }
}

/// `data` framed for `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().saturating_add(1));
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// The error channel's Status for a process that exited with `code` (the kubelet's wording).
pub fn exit_status(code: i32, command: &[String]) -> serde_json::Value {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"});
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The error channel's Status for a process that could not run or be followed.
pub fn failure_status(message: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_by_channel() {
        assert_eq!(incoming(b"\x00hello"), Incoming::Stdin(b"hello"));
        assert_eq!(incoming(b"\x00"), Incoming::Stdin(b""));
        assert_eq!(incoming(&[255, 0]), Incoming::CloseStdin);
        assert_eq!(incoming(&[255, 1]), Incoming::Ignored);
        assert_eq!(incoming(b"\x04{\"Width\":80,\"Height\":24}"), Incoming::Resize { width: 80, height: 24 });
        assert_eq!(incoming(b"\x04{\"Width\":-1}"), Incoming::Ignored);
        assert_eq!(incoming(b""), Incoming::Ignored);
        assert_eq!(incoming(b"\x07x"), Incoming::Ignored);
    }

    #[test]
    fn frames_carry_the_channel_byte() {
        assert_eq!(frame(STDOUT, b"hi"), b"\x01hi".to_vec());
        assert_eq!(frame(ERROR, b""), vec![3]);
    }

    #[test]
    fn exit_codes_become_the_status_kubectl_reads() {
        assert_eq!(exit_status(0, &[])["status"], "Success");
        let s = exit_status(3, &["sh".into(), "-c".into(), "exit 3".into()]);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert!(s["message"].as_str().is_some_and(|m| m.contains("[sh -c exit 3], exit code 3")));
        assert_eq!(failure_status("boom")["reason"], "InternalError");
    }
}
