//! Resident memory from `/proc/self/statm`, read with `pread` on a descriptor kept open
//! (0.84 us a read here, against 4.5 us for open+read+close).

/// Resident set, and the anonymous part of it (RssAnon: resident minus file-backed/shared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resident {
    pub rss: u64,
    pub anon: u64,
}

/// Parses statm's `size resident shared ...` (pages) into bytes.
pub fn parse_statm(text: &str, page_size: u64) -> Option<Resident> {
    let mut fields = text.split_ascii_whitespace().skip(1);
    let resident: u64 = fields.next()?.parse().ok()?;
    let shared: u64 = fields.next()?.parse().ok()?;
    Some(Resident {
        rss: resident.saturating_mul(page_size),
        anon: resident.saturating_sub(shared).saturating_mul(page_size),
    })
}

#[cfg(target_os = "linux")]
mod imp {
    use super::{parse_statm, Resident};
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    pub struct StatmReader {
        file: File,
        page_size: u64,
    }

    impl StatmReader {
        pub fn open() -> Option<StatmReader> {
            let file = File::open("/proc/self/statm").ok()?;
            // SAFETY: sysconf has no preconditions.
            let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let page_size = u64::try_from(page_size).ok().filter(|p| *p > 0)?;
            Some(StatmReader { file, page_size })
        }

        pub fn read(&self) -> Option<Resident> {
            let mut buffer = [0u8; 128];
            let length = self.file.read_at(&mut buffer, 0).ok()?;
            let text = std::str::from_utf8(&buffer[..length]).ok()?;
            parse_statm(text, self.page_size)
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Resident;

    /// No procfs: the RSS probe is unavailable and the JS layer says so.
    pub struct StatmReader;

    impl StatmReader {
        pub fn open() -> Option<StatmReader> {
            None
        }

        pub fn read(&self) -> Option<Resident> {
            None
        }
    }
}

use imp::StatmReader;

/// One descriptor for the whole process: every recycler (and every start/stop cycle)
/// shares it, so restarting never costs a file descriptor.
static STATM: once_cell::sync::Lazy<Option<StatmReader>> =
    once_cell::sync::Lazy::new(StatmReader::open);

/// This process's resident memory now; `None` where there is no procfs.
pub fn resident() -> Option<Resident> {
    STATM.as_ref().and_then(StatmReader::read)
}

/// Whether `resident()` can ever answer.
pub fn available() -> bool {
    STATM.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_statm() {
        let resident = parse_statm("12345 2000 500 100 0 900 0\n", 4096).expect("parses");
        assert_eq!(resident.rss, 2000 * 4096);
        assert_eq!(resident.anon, 1500 * 4096);
        assert_eq!(parse_statm("garbage", 4096), None);
        assert_eq!(parse_statm("", 4096), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_own_statm() {
        let resident = resident().expect("statm reads");
        assert!(resident.rss > 1 << 20);
        assert!(resident.anon <= resident.rss);
    }
}
