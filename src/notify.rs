//! sd_notify: datagrams to `$NOTIFY_SOCKET` (a path, or an abstract name starting with
//! `@`), the way systemd reads them. `READY=1` at start, `STOPPING=1` + `STATUS=` when a
//! recycle starts, `WATCHDOG=1` from the native thread while the event loop answers.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    socket: String,
    /// Half of `WATCHDOG_USEC` (systemd's advice), when the watchdog is on for us.
    watchdog_every: Option<Duration>,
}

impl Notifier {
    pub fn new(
        socket: String,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Notifier {
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>() == Ok(pid));
        let watchdog_every = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        Notifier {
            socket,
            watchdog_every,
        }
    }

    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Sends one datagram without ever blocking: a receiver that stops reading (a full
    /// socket buffer) loses the message instead of freezing `start()` or the sampler.
    pub fn send(&self, message: &str) {
        let _ = send_datagram(&self.socket, message.as_bytes());
    }
}

/// One line of `STATUS=`: newlines would start another assignment.
pub fn status_line(text: &str) -> String {
    format!("STATUS={}", text.replace('\n', " "))
}

#[cfg(target_os = "linux")]
fn send_datagram(socket: &str, message: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sender = UnixDatagram::unbound()?;
    sender.set_nonblocking(true)?;
    if let Some(name) = socket.strip_prefix('@') {
        let address = SocketAddr::from_abstract_name(name.as_bytes())?;
        sender.send_to_addr(message, &address)?;
    } else {
        sender.send_to(message, socket)?;
    }
    Ok(())
}

#[cfg(all(unix, not(target_os = "linux")))]
fn send_datagram(socket: &str, message: &[u8]) -> std::io::Result<()> {
    let sender = std::os::unix::net::UnixDatagram::unbound()?;
    sender.set_nonblocking(true)?;
    sender.send_to(message, socket).map(|_| ())
}

#[cfg(not(unix))]
fn send_datagram(_socket: &str, _message: &[u8]) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "sd_notify needs unix sockets",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    #[test]
    fn watchdog_settings() {
        let n = Notifier::new("/run/x".into(), Some("10000000"), None, 7);
        assert_eq!(n.watchdog_every(), Some(Duration::from_secs(5)));
        let other = Notifier::new("/run/x".into(), Some("10000000"), Some("8"), 7);
        assert_eq!(
            other.watchdog_every(),
            None,
            "WATCHDOG_PID names another process"
        );
        let ours = Notifier::new("/run/x".into(), Some("2000000"), Some("7"), 7);
        assert_eq!(ours.watchdog_every(), Some(Duration::from_secs(1)));
        assert_eq!(
            Notifier::new("/run/x".into(), Some("junk"), None, 7).watchdog_every(),
            None
        );
    }

    #[test]
    fn sends_to_a_path_socket() {
        let path =
            std::env::temp_dir().join(format!("self-recycle-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier::new(path.display().to_string(), None, None, 1);
        notifier.send("STOPPING=1\nSTATUS=recycling");
        let mut buffer = [0u8; 256];
        let length = receiver.recv(&mut buffer).expect("recv");
        assert_eq!(&buffer[..length], b"STOPPING=1\nSTATUS=recycling");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("self-recycle-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        let receiver = UnixDatagram::bind_addr(&address).expect("bind");
        Notifier::new(format!("@{name}"), None, None, 1).send("WATCHDOG=1");
        let mut buffer = [0u8; 64];
        let length = receiver.recv(&mut buffer).expect("recv");
        assert_eq!(&buffer[..length], b"WATCHDOG=1");
    }

    #[test]
    fn a_receiver_that_never_reads_never_blocks_the_sender() {
        let path = std::env::temp_dir().join(format!(
            "self-recycle-notify-full-{}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let _receiver = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier::new(path.display().to_string(), None, None, 1);
        let started = std::time::Instant::now();
        // Far more than a socket buffer holds: a blocking send would hang here.
        for _ in 0..20_000 {
            notifier.send("WATCHDOG=1");
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(status_line("a\nb"), "STATUS=a b");
    }
}
