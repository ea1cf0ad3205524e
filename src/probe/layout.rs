//! Whether an object V8 handed us is the C++ class we think it is, decided before any of
//! its virtual functions is called.
//!
//! `sampling` calls three slots of `v8::internal::AllocationProfile`'s vtable (GetRootNode,
//! GetSamples, the deleting destructor). Those slots are only called once the object's
//! vtable pointer and each slot are equal to the addresses the running binary gives for
//! that class's vtable and methods: from `dlsym` where they are exported (Node 18-22), else
//! from the ELF `.symtab` of the file V8 is mapped from (Node 24 and later hide them from
//! the dynamic table but keep the static one), shifted by the load bias that two exported
//! symbols agree on. Memory is read only inside mappings of that file (`/proc/self/maps`,
//! read once). Anything unconfirmed is refused: the object is leaked, never deleted
//! through an unknown function, and the caller falls back to the inspector.
//!
//! The decisions (`decide`, `Image`, `parse_maps`, `find_symbols`) are pure or read files
//! only, so they are tested without V8.

use std::fs::File;

/// The class whose vtable is checked.
pub const VTABLE: &str = "_ZTVN2v88internal17AllocationProfileE";
/// Its vtable slots in Itanium order: the two virtual methods `v8::AllocationProfile`
/// declares, then its virtual destructor (complete, deleting).
pub const SLOTS: [&str; 4] = [
    "_ZN2v88internal17AllocationProfile11GetRootNodeEv",
    "_ZN2v88internal17AllocationProfile10GetSamplesEv",
    "_ZN2v88internal17AllocationProfileD1Ev",
    "_ZN2v88internal17AllocationProfileD0Ev",
];
/// The complete destructor's alias, for a binary that names only the base-object one.
pub const SLOT_2_ALIAS: &str = "_ZN2v88internal17AllocationProfileD2Ev";
/// Slots `sampling` calls: GetRootNode, GetSamples, the deleting destructor.
pub const CALLED_SLOTS: [usize; 3] = [0, 1, 3];
/// An exported function whose dynamic and static addresses give the load bias.
pub const ANCHOR: &str = "_ZN2v812HeapProfiler20GetAllocationProfileEv";
/// What every name looked up in the static symbol table holds.
pub const NEEDLE: &str = "AllocationProfile";
/// A vtable's address point is past offset-to-top and the RTTI pointer.
pub const ADDRESS_POINT: usize = 2 * std::mem::size_of::<usize>();
/// Words read around the address point: offset-to-top, RTTI, then the four slots.
pub const VTABLE_WORDS: usize = 6;

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    pub path: String,
}

/// The mappings in `/proc/self/maps` text; lines that do not parse are skipped.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            let perms = perms.as_bytes();
            if start >= end || perms.len() < 3 {
                return None;
            }
            // offset, device, inode, then the path (which may hold spaces).
            let path = fields.skip(3).collect::<Vec<_>>().join(" ");
            Some(Mapping {
                start,
                end,
                readable: perms[0] == b'r',
                writable: perms[1] == b'w',
                executable: perms[2] == b'x',
                path,
            })
        })
        .collect()
}

/// The mappings of the file that holds one address (the binary V8 is linked into).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub path: String,
    /// All mappings, anonymous ones included: a slot may sit in text that Node remapped to
    /// anonymous huge pages (`--use-largepages`).
    mappings: Vec<Mapping>,
}

impl Image {
    /// The image holding `address` (its ELF header, say), if a named, present file is
    /// mapped there.
    pub fn of(mappings: Vec<Mapping>, address: usize) -> Option<Image> {
        let path = mappings
            .iter()
            .find(|m| (m.start..m.end).contains(&address))?
            .path
            .clone();
        if !path.starts_with('/') || path.ends_with(" (deleted)") {
            return None;
        }
        Some(Image { path, mappings })
    }

    /// `[address, address + len)` lies in one readable, non-writable mapping of this file:
    /// where a vtable lives (read-only data after RELRO, or the one read-execute segment
    /// older linkers put `.rodata` in, as Node 18's).
    pub fn read_only(&self, address: usize, len: usize) -> bool {
        let Some(end) = address.checked_add(len) else {
            return false;
        };
        self.mappings.iter().any(|m| {
            m.path == self.path && m.readable && !m.writable && m.start <= address && end <= m.end
        })
    }

    /// `address` is in an executable mapping of this file, or in anonymous read-execute
    /// memory inside the file's span (text Node remapped to huge pages in place).
    pub fn executable(&self, address: usize) -> bool {
        let own = self.mappings.iter().filter(|m| m.path == self.path);
        let span = own
            .clone()
            .map(|m| m.start)
            .min()
            .zip(own.map(|m| m.end).max());
        self.mappings.iter().any(|m| {
            m.executable
                && !m.writable
                && (m.start..m.end).contains(&address)
                && (m.path == self.path
                    || (m.path.is_empty()
                        && span.is_some_and(|(start, end)| start <= m.start && m.end <= end)))
        })
    }
}

/// Where the class's vtable and methods are in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The vtable's address point (what an object's first word holds); `None`: unknown.
    pub vtable: Option<usize>,
    /// Each slot's function; `None`: that symbol is not known here.
    pub slots: [Option<usize>; 4],
}

impl Expected {
    /// Refuses a table where a called slot is unknown, an address is not where its kind
    /// of symbol lives, or the class's vtable (read with `words` from its first word, only
    /// inside the image's read-only data) does not hold the methods found: nothing could
    /// be confirmed against it. That also catches a wrong load bias.
    pub fn check(
        self,
        image: &Image,
        words: impl FnOnce(usize) -> [usize; VTABLE_WORDS],
    ) -> Result<Expected, String> {
        for index in CALLED_SLOTS {
            match self.slots[index] {
                None => {
                    return Err(format!(
                        "the running binary does not name {} (slot {index})",
                        SLOTS[index]
                    ))
                }
                Some(address) if !image.executable(address) => {
                    return Err(format!(
                        "{} resolves to {address:#x}, outside executable code",
                        SLOTS[index]
                    ))
                }
                Some(_) => {}
            }
        }
        let Some(vtable) = self.vtable else {
            return Ok(self);
        };
        let Some(first) = vtable
            .checked_sub(ADDRESS_POINT)
            .filter(|&at| at.is_multiple_of(std::mem::align_of::<usize>()))
            .filter(|&at| image.read_only(at, VTABLE_WORDS * std::mem::size_of::<usize>()))
        else {
            return Err(format!(
                "{VTABLE} resolves to {vtable:#x}, outside read-only data"
            ));
        };
        let words = words(first);
        let differs = (0..SLOTS.len())
            .find(|&i| self.slots[i].is_some_and(|address| address != words[2 + i]));
        if words[0] != 0 || differs.is_some() {
            return Err(format!(
                "{VTABLE} does not hold the methods found (slot {})",
                differs.map_or("offset".to_string(), |i| i.to_string())
            ));
        }
        Ok(self)
    }
}

/// One check of an object against `Expected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Equal to the expected address.
    Confirmed,
    /// Nothing to compare with (the symbol is not known) or not read.
    Unknown,
    /// Differs from what was expected.
    Wrong,
}

/// What was found on one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// Its vtable pointer is the class's address point (`Wrong` also when it does not point
    /// into the image's read-only data: then no slot is read).
    pub vtable: Check,
    /// The vtable's offset-to-top is 0 (a primary vtable).
    pub header: Check,
    pub slots: [Check; 4],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Everything called is confirmed: read the profile, then delete it.
    Read,
    /// Call nothing; leak the object (its destructor is not confirmed) and fall back.
    Leak(String),
}

/// Which checks passed -> call or leak. Slots 0, 1 and 3 are called: each must be
/// confirmed. Anything found wrong (slot 2 and the vtable included) refuses the object.
pub fn decide(checks: &Checks) -> Decision {
    if checks.vtable == Check::Wrong {
        return Decision::Leak("its vtable is not v8::internal::AllocationProfile's".to_string());
    }
    if checks.header == Check::Wrong {
        return Decision::Leak("its vtable is not a primary vtable".to_string());
    }
    if let Some(index) = (0..SLOTS.len()).find(|&i| checks.slots[i] == Check::Wrong) {
        return Decision::Leak(format!("vtable slot {index} is not {}", SLOTS[index]));
    }
    if let Some(&index) = CALLED_SLOTS
        .iter()
        .find(|&&i| checks.slots[i] != Check::Confirmed)
    {
        return Decision::Leak(format!("vtable slot {index} could not be confirmed"));
    }
    Decision::Read
}

/// The checks for an object whose vtable pointer is `vptr`. `words` reads the vtable's
/// words from `vptr - ADDRESS_POINT` and is only called when they lie in read-only data
/// of the image.
pub fn check_object(
    expected: &Expected,
    image: &Image,
    vptr: usize,
    words: impl FnOnce(usize) -> [usize; VTABLE_WORDS],
) -> Checks {
    let unread = Checks {
        vtable: Check::Wrong,
        header: Check::Unknown,
        slots: [Check::Unknown; 4],
    };
    let aligned = vptr.is_multiple_of(std::mem::align_of::<usize>()) && vptr >= ADDRESS_POINT;
    if !aligned
        || !image.read_only(
            vptr - ADDRESS_POINT,
            VTABLE_WORDS * std::mem::size_of::<usize>(),
        )
    {
        return unread;
    }
    let vtable = match expected.vtable {
        Some(address) if address == vptr => Check::Confirmed,
        Some(_) => return unread,
        None => Check::Unknown,
    };
    let words = words(vptr - ADDRESS_POINT);
    let compare = |found: usize, expected: Option<usize>| match expected {
        Some(address) if address == found => Check::Confirmed,
        Some(_) => Check::Wrong,
        None => Check::Unknown,
    };
    Checks {
        vtable,
        header: if words[0] == 0 {
            Check::Confirmed
        } else {
            Check::Wrong
        },
        slots: std::array::from_fn(|i| compare(words[2 + i], expected.slots[i])),
    }
}

/// A symbol's value in the file (not shifted by the load bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSymbol {
    pub value: u64,
}

const SHT_SYMTAB: u32 = 2;
const CHUNK: usize = 1 << 20;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn read_exact_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buffer = Vec::new();
    read_into(file, &mut buffer, offset, len)?;
    Ok(buffer)
}

/// Reads `len` bytes at `offset` into `buffer` (reused: no allocation per piece).
#[cfg(unix)]
fn read_into(file: &File, buffer: &mut Vec<u8>, offset: u64, len: usize) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    buffer.resize(len, 0);
    file.read_exact_at(buffer, offset)
        .map_err(|e| format!("cannot read the binary's symbol table: {e}"))
}

#[cfg(not(unix))]
fn read_into(_file: &File, _buffer: &mut Vec<u8>, _offset: u64, _len: usize) -> Result<(), String> {
    Err("ELF symbol tables are read on Linux only".to_string())
}

/// The values of `names` in the ELF64 little-endian `.symtab` of `file` (`None`: absent or
/// ambiguous). Streams the string and symbol tables in 1 MiB pieces, looking for `needle`
/// (which every name holds: one pass over the strings, however many names).
pub fn find_symbols(
    file: &File,
    needle: &str,
    names: &[&str],
) -> Result<Vec<Option<FileSymbol>>, String> {
    let malformed = |what: &str| format!("the binary's ELF header is not readable ({what})");
    let header = read_exact_at(file, 0, 64)?;
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Err("the binary is not a 64-bit little-endian ELF file".to_string());
    }
    let section_offset = u64_at(&header, 0x28).ok_or_else(|| malformed("e_shoff"))?;
    let entry_size = usize::from(u16_at(&header, 0x3A).ok_or_else(|| malformed("e_shentsize"))?);
    let count = usize::from(u16_at(&header, 0x3C).ok_or_else(|| malformed("e_shnum"))?);
    if entry_size != 64 || count == 0 || count > 4096 {
        return Err(malformed("section headers"));
    }
    let sections = read_exact_at(file, section_offset, entry_size * count)?;
    let section = |index: usize| -> Option<(u32, u64, u64, u32, u64)> {
        let at = index * entry_size;
        Some((
            u32_at(&sections, at + 4)?,
            u64_at(&sections, at + 0x18)?,
            u64_at(&sections, at + 0x20)?,
            u32_at(&sections, at + 0x28)?,
            u64_at(&sections, at + 0x38)?,
        ))
    };
    let symtab = (0..count)
        .filter_map(section)
        .find(|(kind, ..)| *kind == SHT_SYMTAB)
        .ok_or_else(|| "the binary has no static symbol table (stripped)".to_string())?;
    let (_, symbols_offset, symbols_size, link, symbol_size) = symtab;
    let (_, strings_offset, strings_size, ..) =
        section(link as usize).ok_or_else(|| malformed("symtab link"))?;
    if symbol_size != 24 {
        return Err(malformed("symbol entry size"));
    }

    // Offsets in the string table at which each name starts (a linker may share a name's
    // bytes with the tail of a longer one, so any offset followed by `name\0` names it).
    let mut offsets: Vec<Vec<u32>> = vec![Vec::new(); names.len()];
    let longest = names.iter().map(|n| n.len()).max().unwrap_or(0) + 1;
    // Where the needle sits in each name (a name without it is never found).
    let needle_at: Vec<Option<usize>> = names.iter().map(|n| n.find(needle)).collect();
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let mut chunk = Vec::with_capacity(CHUNK + longest);
    let mut start: u64 = 0;
    while start < strings_size {
        let len = (strings_size - start).min((CHUNK + longest) as u64) as usize;
        read_into(file, &mut chunk, strings_offset + start, len)?;
        let last = start + len as u64 == strings_size;
        for hit in finder.find_iter(&chunk) {
            for (i, name) in names.iter().enumerate() {
                let Some(begin) = needle_at[i].and_then(|k| hit.checked_sub(k)) else {
                    continue;
                };
                // A name starting in the overlap is found whole by the next chunk.
                let whole = chunk.get(begin..begin + name.len() + 1);
                let matches = whole
                    .is_some_and(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0);
                if matches && (begin < CHUNK || last) {
                    if let Ok(offset) = u32::try_from(start + begin as u64) {
                        if !offsets[i].contains(&offset) {
                            offsets[i].push(offset);
                        }
                    }
                }
            }
        }
        start += CHUNK as u64;
    }

    let mut values: Vec<Vec<u64>> = vec![Vec::new(); names.len()];
    let per_chunk = CHUNK / 24;
    let mut index: u64 = 0;
    let total = symbols_size / 24;
    while index < total {
        let n = (total - index).min(per_chunk as u64) as usize;
        read_into(file, &mut chunk, symbols_offset + index * 24, n * 24)?;
        for entry in chunk.chunks_exact(24) {
            let (Some(name), Some(value), Some(shndx)) =
                (u32_at(entry, 0), u64_at(entry, 8), u16_at(entry, 6))
            else {
                continue;
            };
            if shndx == 0 || name == 0 {
                continue; // undefined
            }
            for (i, found) in offsets.iter().enumerate() {
                if found.contains(&name) && !values[i].contains(&value) {
                    values[i].push(value);
                }
            }
        }
        index += n as u64;
    }
    Ok(values
        .into_iter()
        .map(|v| match v.as_slice() {
            [value] => Some(FileSymbol { value: *value }),
            _ => None,
        })
        .collect())
}

/// The load bias the anchors agree on: runtime address minus file value, each.
pub fn load_bias(pairs: &[(usize, Option<FileSymbol>)]) -> Result<usize, String> {
    let mut bias = None;
    for &(runtime, file) in pairs {
        let file = file.ok_or_else(|| {
            "the binary's symbol table does not name its exported V8 functions".to_string()
        })?;
        let this = runtime.wrapping_sub(file.value as usize);
        if bias.is_some_and(|b| b != this) {
            return Err(
                "the binary on disk is not the one running (its symbols moved)".to_string(),
            );
        }
        bias = Some(this);
    }
    bias.ok_or_else(|| "no anchor symbol".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
00400000-0074d000 r--p 00000000 08:01 123 /opt/node/bin/node
0074d000-00800000 r-xp 0034d000 08:01 123 /opt/node/bin/node
00800000-03000000 r-xp 00000000 00:00 0 
03000000-03081000 r-xp 02c00000 08:01 123 /opt/node/bin/node
03201000-06b83000 r--p 02e01000 08:01 123 /opt/node/bin/node
06b87000-06bae000 rw-p 06786000 08:01 123 /opt/node/bin/node
06be8000-06e36000 rw-p 00000000 00:00 0 [heap]
7fffd7dc0000-7fffd7fc5000 r-xp 00000000 00:00 0 
7ffff7a44000-7ffff7b9a000 r-xp 00026000 08:01 77 /usr/lib/libc.so.6
7ffff7c00000-7ffff7c99000 r--p 00000000 08:01 78 /usr/lib/my lib.so (deleted)
garbage line
";

    fn image() -> Image {
        Image::of(parse_maps(MAPS), 0x0040_0000).expect("node is mapped")
    }

    const VT: usize = 0x03dc_1780;

    fn expected() -> Expected {
        Expected {
            vtable: Some(VT),
            slots: [
                Some(0x0137_c3a0),
                Some(0x0137_c400),
                Some(0x0137_c4d0),
                Some(0x0137_c740),
            ],
        }
    }

    fn words() -> [usize; VTABLE_WORDS] {
        [0, 0, 0x0137_c3a0, 0x0137_c400, 0x0137_c4d0, 0x0137_c740]
    }

    #[test]
    fn maps_lines_parse_with_permissions_and_paths() {
        let maps = parse_maps(MAPS);
        assert_eq!(maps.len(), 10);
        assert_eq!(
            maps[1],
            Mapping {
                start: 0x74d000,
                end: 0x800000,
                readable: true,
                writable: false,
                executable: true,
                path: "/opt/node/bin/node".to_string()
            }
        );
        assert_eq!(maps[2].path, "");
        assert_eq!(maps[9].path, "/usr/lib/my lib.so (deleted)");
    }

    #[test]
    fn the_image_is_the_file_holding_the_address_never_a_deleted_or_anonymous_one() {
        assert_eq!(image().path, "/opt/node/bin/node");
        assert!(Image::of(parse_maps(MAPS), 0x06c0_0000).is_none(), "[heap]");
        assert!(
            Image::of(parse_maps(MAPS), 0x7fff_f7c0_1000).is_none(),
            "deleted"
        );
        assert!(Image::of(parse_maps(MAPS), 0x10).is_none(), "unmapped");
        assert!(
            Image::of(parse_maps(MAPS), 0x0137_c3a0).is_none(),
            "text remapped to huge pages: found from the ELF header instead"
        );
    }

    #[test]
    fn ranges_text_and_read_only_data_of_the_image_only() {
        let image = image();
        assert!(image.executable(0x0137_c3a0));
        assert!(image.executable(0x0074_d000), "the file's own text");
        assert!(
            image.executable(0x0137_c3a0),
            "text remapped to huge pages in place"
        );
        assert!(
            !image.executable(0x7fff_d7dc_1000),
            "anonymous code elsewhere (a JIT)"
        );
        assert!(!image.executable(0x7fff_f7a4_5000), "libc's text");
        assert!(!image.executable(0x0040_1000), "read-only data");
        assert!(!image.executable(0x0308_1000), "the end is exclusive");
        assert!(image.read_only(VT - 16, 48));
        assert!(!image.read_only(0x06b8_7000, 8), "writable data");
        assert!(
            !image.read_only(0x06b8_2ff8, 16),
            "across the end of a mapping"
        );
        assert!(!image.read_only(usize::MAX - 4, 8), "overflow");
        assert!(
            image.read_only(0x0074_d000, 8),
            "a read-execute segment is not writable"
        );
        assert!(!image.read_only(0x0080_1000, 8), "anonymous");
    }

    #[test]
    fn expected_addresses_must_be_known_for_called_slots_and_where_their_kind_lives() {
        let image = image();
        let read = |at: usize| {
            assert_eq!(at, VT - ADDRESS_POINT);
            words()
        };
        assert!(expected().check(&image, read).is_ok());
        let mut slot_2_unknown = expected();
        slot_2_unknown.slots[2] = None;
        assert!(
            slot_2_unknown.check(&image, read).is_ok(),
            "slot 2 is never called"
        );
        let no_vtable = Expected {
            vtable: None,
            ..expected()
        };
        assert!(
            no_vtable.check(&image, |_| unreachable!()).is_ok(),
            "the objects decide"
        );
        for called in CALLED_SLOTS {
            let mut missing = expected();
            missing.slots[called] = None;
            assert!(missing.check(&image, read).is_err(), "slot {called}");
            let mut in_data = expected();
            in_data.slots[called] = Some(VT);
            assert!(
                in_data.check(&image, read).is_err(),
                "slot {called} in data"
            );
        }
        for vtable in [0x06c0_0000, 0x06b8_7010, VT + 1, 8] {
            let elsewhere = Expected {
                vtable: Some(vtable),
                ..expected()
            };
            assert!(
                elsewhere.check(&image, |_| unreachable!()).is_err(),
                "{vtable:#x}"
            );
        }
        // The vtable must hold the methods found (a wrong load bias would not).
        for word in 0..VTABLE_WORDS {
            if word == 1 {
                continue; // RTTI: not compared
            }
            let mut changed = words();
            changed[word] += 0x40;
            assert!(
                expected().check(&image, |_| changed).is_err(),
                "word {word}"
            );
        }
        let mut rtti = words();
        rtti[1] = 0x0300_0000;
        assert!(expected().check(&image, |_| rtti).is_ok());
    }

    #[test]
    fn decision_table() {
        use Check::*;
        let all = |vtable, header, slots| {
            decide(&Checks {
                vtable,
                header,
                slots,
            })
        };
        let ok = [Confirmed; 4];
        assert_eq!(all(Confirmed, Confirmed, ok), Decision::Read);
        // No vtable symbol: the slots alone confirm it.
        assert_eq!(all(Unknown, Confirmed, ok), Decision::Read);
        // Slot 2 is never called: unknown is fine, wrong is not.
        assert_eq!(
            all(
                Confirmed,
                Confirmed,
                [Confirmed, Confirmed, Unknown, Confirmed]
            ),
            Decision::Read
        );
        let leaks = |c: Checks| matches!(decide(&c), Decision::Leak(_));
        assert!(leaks(Checks {
            vtable: Wrong,
            header: Confirmed,
            slots: ok
        }));
        assert!(leaks(Checks {
            vtable: Confirmed,
            header: Wrong,
            slots: ok
        }));
        for slot in 0..4 {
            let mut slots = ok;
            slots[slot] = Wrong;
            assert!(
                leaks(Checks {
                    vtable: Confirmed,
                    header: Confirmed,
                    slots
                }),
                "{slot} wrong"
            );
        }
        for slot in CALLED_SLOTS {
            let mut slots = ok;
            slots[slot] = Unknown;
            assert!(
                leaks(Checks {
                    vtable: Confirmed,
                    header: Confirmed,
                    slots
                }),
                "{slot} unknown"
            );
        }
        assert_eq!(
            decide(&Checks {
                vtable: Confirmed,
                header: Confirmed,
                slots: [Confirmed, Wrong, Confirmed, Confirmed]
            }),
            Decision::Leak(format!("vtable slot 1 is not {}", SLOTS[1]))
        );
    }

    #[test]
    fn an_object_is_checked_word_by_word_and_its_vtable_read_only_inside_the_image() {
        let (image, expected) = (image(), expected());
        let read = std::cell::Cell::new(false);
        let reader = |at: usize| {
            assert_eq!(at, VT - ADDRESS_POINT);
            read.set(true);
            words()
        };
        let checks = check_object(&expected, &image, VT, reader);
        assert!(read.get());
        assert_eq!(decide(&checks), Decision::Read);

        // A vtable pointer into the heap, text, unaligned or null: nothing is read.
        for vptr in [0x06c0_0000, 0x0137_c400, VT + 1, 0, 8] {
            let checks = check_object(&expected, &image, vptr, |_| unreachable!("read {vptr:#x}"));
            assert_eq!(checks.vtable, Check::Wrong, "{vptr:#x}");
            assert!(matches!(decide(&checks), Decision::Leak(_)));
        }
        // Another class's vtable in read-only data: refused before its slots are read.
        let other = check_object(&expected, &image, VT + 64, |_| unreachable!());
        assert_eq!(other.vtable, Check::Wrong);

        // No vtable symbol: the slots decide; a moved destructor is refused.
        let unnamed = Expected {
            vtable: None,
            ..expected.clone()
        };
        assert_eq!(
            decide(&check_object(&unnamed, &image, VT, |_| words())),
            Decision::Read
        );
        let mut moved = words();
        moved[5] = 0x0137_c4d0;
        let checks = check_object(&unnamed, &image, VT, |_| moved);
        assert_eq!(checks.slots[3], Check::Wrong);
        assert!(matches!(decide(&checks), Decision::Leak(_)));
        let mut offset = words();
        offset[0] = 16;
        assert_eq!(
            check_object(&expected, &image, VT, |_| offset).header,
            Check::Wrong
        );
    }

    #[test]
    fn load_bias_needs_every_anchor_and_their_agreement() {
        assert_eq!(
            load_bias(&[(0x5000, Some(FileSymbol { value: 0x1000 }))]),
            Ok(0x4000)
        );
        let at = |value| Some(FileSymbol { value });
        assert_eq!(
            load_bias(&[(0x5000, at(0x1000)), (0x6000, at(0x2000))]),
            Ok(0x4000)
        );
        assert_eq!(
            load_bias(&[(0x1000, at(0x1000)), (0x2000, at(0x2000))]),
            Ok(0)
        );
        assert!(load_bias(&[(0x5000, at(0x1000)), (0x6000, at(0x2100))]).is_err());
        assert!(load_bias(&[(0x5000, at(0x1000)), (0x6000, None)]).is_err());
        assert!(load_bias(&[]).is_err());
    }

    /// A minimal ELF64 file: a string table (`strings`, padded to `pad` bytes first) and a
    /// symbol table of `(name offset, value, section index)`.
    fn elf(strings: &[u8], symbols: &[(u32, u64, u16)]) -> Vec<u8> {
        let strtab_at = 64u64;
        let symtab_at = strtab_at + strings.len() as u64;
        let mut symtab = vec![0u8; 24]; // the null symbol
        for &(name, value, shndx) in symbols {
            let mut entry = [0u8; 24];
            entry[0..4].copy_from_slice(&name.to_le_bytes());
            entry[6..8].copy_from_slice(&shndx.to_le_bytes());
            entry[8..16].copy_from_slice(&value.to_le_bytes());
            symtab.extend_from_slice(&entry);
        }
        let shoff = symtab_at + symtab.len() as u64;
        let mut file = vec![0u8; 64];
        file[..6].copy_from_slice(b"\x7fELF\x02\x01");
        file[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        file[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        file[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        file.extend_from_slice(strings);
        file.extend_from_slice(&symtab);
        let section = |kind: u32, offset: u64, size: u64, link: u32, entsize: u64| {
            let mut header = [0u8; 64];
            header[4..8].copy_from_slice(&kind.to_le_bytes());
            header[0x18..0x20].copy_from_slice(&offset.to_le_bytes());
            header[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            header[0x28..0x2C].copy_from_slice(&link.to_le_bytes());
            header[0x38..0x40].copy_from_slice(&entsize.to_le_bytes());
            header
        };
        file.extend_from_slice(&[0u8; 64]);
        file.extend_from_slice(&section(3, strtab_at, strings.len() as u64, 0, 0));
        file.extend_from_slice(&section(SHT_SYMTAB, symtab_at, symtab.len() as u64, 1, 24));
        file
    }

    fn temp_file(name: &str, bytes: &[u8]) -> (std::path::PathBuf, File) {
        let path =
            std::env::temp_dir().join(format!("self-recycle-layout-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("temp file");
        let file = File::open(&path).expect("temp file");
        (path, file)
    }

    #[test]
    fn symbols_are_found_across_chunks_tail_shared_names_included_ambiguous_ones_refused() {
        // A string table over 1 MiB: one name straddles the first chunk's end.
        let mut strings = vec![0u8];
        let at = |strings: &mut Vec<u8>, name: &str| {
            let offset = strings.len() as u32;
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            offset
        };
        let vtable = at(&mut strings, VTABLE);
        // The tail of a longer string names a symbol too (linkers share tails).
        let longer = at(&mut strings, &format!("_ZN4node6Wrapper{}", SLOTS[2]));
        let d1 = longer + "_ZN4node6Wrapper".len() as u32;
        strings.resize(CHUNK - 20, b'x');
        strings.push(0);
        let straddling = at(&mut strings, SLOTS[0]);
        assert!((straddling as usize) < CHUNK && straddling as usize + SLOTS[0].len() > CHUNK);
        let twice = at(&mut strings, SLOTS[3]);
        let undefined = at(&mut strings, ANCHOR);
        let prefix_only = at(&mut strings, &SLOTS[1][..SLOTS[1].len() - 1]);
        let file = elf(
            &strings,
            &[
                (vtable, 0x3dc1770, 17),
                (straddling, 0x137c3a0, 13),
                (twice, 0x137c740, 13),
                (twice, 0x137c750, 13),
                (undefined, 0x999, 0),
                (d1, 0x137c4d0, 13),
                (prefix_only, 0x137c400, 13),
            ],
        );
        let (path, handle) = temp_file("symbols", &file);
        let found = find_symbols(
            &handle,
            NEEDLE,
            &[VTABLE, SLOTS[0], SLOTS[3], ANCHOR, SLOTS[2], SLOTS[1]],
        );
        std::fs::remove_file(&path).ok();
        let found = found.expect("a valid ELF file");
        let value = |v| Some(FileSymbol { value: v });
        assert_eq!(found[0], value(0x3dc1770));
        assert_eq!(found[1], value(0x137c3a0), "across the chunk boundary");
        assert_eq!(found[2], None, "two values: ambiguous");
        assert_eq!(found[3], None, "undefined symbols do not count");
        assert_eq!(found[4], value(0x137c4d0), "a shared tail");
        assert_eq!(found[5], None, "only a prefix of it is named");
    }

    #[test]
    fn a_stripped_or_foreign_file_is_an_error() {
        let mut stripped = elf(b"\0", &[]);
        // Turn the symbol table's type into PROGBITS.
        let symtab_header = stripped.len() - 64;
        stripped[symtab_header + 4..symtab_header + 8].copy_from_slice(&1u32.to_le_bytes());
        let (path, file) = temp_file("stripped", &stripped);
        let error = find_symbols(&file, "x", &["x"]);
        std::fs::remove_file(&path).ok();
        assert_eq!(
            error,
            Err("the binary has no static symbol table (stripped)".to_string())
        );
        let mut big_endian = elf(b"\0", &[]);
        big_endian[5] = 2;
        let (path, file) = temp_file("big", &big_endian);
        let error = find_symbols(&file, "x", &["x"]);
        std::fs::remove_file(&path).ok();
        assert!(error.is_err());
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error() {
        let dir = std::env::temp_dir().join(format!("self-recycle-layout-{}", std::process::id()));
        std::fs::write(
            &dir,
            b"#!/bin/sh\necho not an elf file, but long enough to have a header of 64 bytes\n",
        )
        .expect("temp file");
        let file = File::open(&dir).expect("temp file");
        assert!(find_symbols(&file, "x", &["x"]).is_err());
        std::fs::remove_file(&dir).ok();
    }
}
