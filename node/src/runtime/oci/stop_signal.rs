//! The signal a Linux container is stopped with (KEP-4960, `ContainerStopSignals`): the
//! container's `lifecycle.stopSignal`, else the image config's `StopSignal`, else SIGTERM, as
//! containerd's CRI chooses it. SIGKILL always follows when the grace period ends.

use std::str::FromStr;

use nix::sys::signal::Signal;

/// The default stop signal.
pub const SIGTERM: u32 = 15;

/// A signal name or number as Kubernetes (`SIGUSR1`, `SIGRTMIN+3`) and image configs (`USR1`,
/// `10`, `SIGQUIT`) write it; `None` for anything that is not a Linux signal.
pub fn parse(name: &str) -> Option<u32> {
    let name = name.trim();
    if let Ok(n) = name.parse::<u32>() {
        return (1..=max_signal()).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        return realtime(min_realtime(), rest, true);
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        return realtime(max_signal(), rest, false);
    }
    let signal = match bare {
        // Aliases nix does not name.
        "CLD" => Signal::SIGCHLD,
        "POLL" => Signal::SIGIO,
        "IOT" => Signal::SIGABRT,
        _ => Signal::from_str(&format!("SIG{bare}")).ok()?,
    };
    u32::try_from(signal as i32).ok()
}

/// `RTMIN`, `RTMIN+n` (up to `RTMAX`) or `RTMAX`, `RTMAX-n` (down to `RTMIN`).
fn realtime(base: u32, offset: &str, up: bool) -> Option<u32> {
    let n: u32 = match offset {
        "" => 0,
        _ => offset.strip_prefix(if up { '+' } else { '-' })?.parse().ok()?,
    };
    let signal = if up { base.checked_add(n)? } else { base.checked_sub(n)? };
    (min_realtime()..=max_signal()).contains(&signal).then_some(signal)
}

fn min_realtime() -> u32 {
    u32::try_from(libc::SIGRTMIN()).unwrap_or(34)
}

fn max_signal() -> u32 {
    u32::try_from(libc::SIGRTMAX()).unwrap_or(64)
}

/// The signal to stop a container with: the spec's, else the image's, else SIGTERM. A value that
/// is not a signal falls back (admission refuses such a spec; an image may carry anything).
pub fn choose(container: Option<&str>, image: Option<&str>) -> u32 {
    for (source, value) in [("lifecycle.stopSignal", container), ("the image's StopSignal", image)] {
        let Some(value) = value.filter(|v| !v.trim().is_empty()) else { continue };
        match parse(value) {
            Some(signal) => return signal,
            None => tracing::warn!(%value, "{source} is not a signal; using the next choice"),
        }
    }
    SIGTERM
}

/// What `containerStatuses[].stopSignal` shows (Kubernetes 1.33): the chosen signal by its
/// Kubernetes name (`SIGUSR1`, `SIGRTMIN+3`), when the container or its image names one that is a
/// signal; `None` when SIGTERM is only the default.
pub fn reported(container: Option<&str>, image: Option<&str>) -> Option<String> {
    let named = [container, image].into_iter().flatten().any(|v| parse(v).is_some());
    named.then(|| name(choose(container, image)))
}

/// A signal number by its Kubernetes name: `SIGTERM`, `SIGRTMIN+n` for the first 15 realtime
/// signals, `SIGRTMAX-n` for the rest.
pub fn name(signal: u32) -> String {
    let (min, max) = (min_realtime(), max_signal());
    if (min..=max).contains(&signal) {
        return match (signal - min, max - signal) {
            (0, _) => "SIGRTMIN".into(),
            (_, 0) => "SIGRTMAX".into(),
            (up, _) if up <= 15 => format!("SIGRTMIN+{up}"),
            (_, down) => format!("SIGRTMAX-{down}"),
        };
    }
    i32::try_from(signal)
        .ok()
        .and_then(|s| Signal::try_from(s).ok())
        .map_or_else(|| signal.to_string(), |s| s.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_realtime_signals_parse() {
        assert_eq!(parse("SIGTERM"), Some(15));
        assert_eq!(parse("SIGUSR1"), Some(10));
        assert_eq!(parse("usr2"), Some(12));
        assert_eq!(parse("QUIT"), Some(3));
        assert_eq!(parse("9"), Some(9));
        assert_eq!(parse("SIGIOT"), Some(6));
        assert_eq!(parse("SIGRTMIN"), Some(min_realtime()));
        assert_eq!(parse("SIGRTMIN+3"), Some(min_realtime() + 3));
        assert_eq!(parse("SIGRTMAX-1"), Some(max_signal() - 1));
        assert_eq!(parse("SIGRTMAX"), Some(max_signal()));
    }

    #[test]
    fn what_is_not_a_signal_is_refused() {
        for bad in [
            "",
            "SIG",
            "SIGFOO",
            "0",
            "65",
            "-1",
            "99999999999",
            "SIGRTMIN+99",
            "SIGRTMAX+1",
            "SIGRTMIN-1",
            "SIGRTMIN+x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_spec_beats_the_image_which_beats_sigterm() {
        assert_eq!(choose(Some("SIGUSR1"), Some("SIGQUIT")), 10);
        assert_eq!(choose(None, Some("SIGQUIT")), 3);
        assert_eq!(choose(Some(""), Some("3")), 3);
        assert_eq!(choose(None, None), SIGTERM);
        assert_eq!(choose(None, Some("nonsense")), SIGTERM);
    }

    #[test]
    fn the_reported_signal_has_its_kubernetes_name_and_only_when_named() {
        assert_eq!(reported(Some("SIGUSR1"), None).as_deref(), Some("SIGUSR1"));
        assert_eq!(reported(None, Some("quit")).as_deref(), Some("SIGQUIT"));
        assert_eq!(reported(None, Some("15")).as_deref(), Some("SIGTERM"));
        assert_eq!(reported(Some("SIGRTMIN+3"), Some("QUIT")).as_deref(), Some("SIGRTMIN+3"));
        assert_eq!(reported(None, None), None);
        assert_eq!(reported(None, Some("nonsense")), None);
        for signal in 1..=max_signal() {
            assert_eq!(parse(&name(signal)), Some(signal), "{}", name(signal));
        }
        assert_eq!(name(max_signal() - 1), "SIGRTMAX-1");
    }
}
