//! The physical limit: loops that write the engine's own frame bytes with nothing but
//! system calls, and a scan that reads the log back checking each frame's CRC.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A file of `len` bytes of real zeros (not a sparse extent), durable: what the engine's
/// segments are before records overwrite them.
pub fn preallocated(path: &Path, len: u64) -> File {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .expect("create file");
    let zeros = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off).expect("zero fill");
        off += n as u64;
    }
    f.sync_all().expect("sync");
    f
}

/// `fdatasync` after every group of `batch` frames, overwriting a preallocated,
/// zero-filled file. With `batch == 1` this is the fastest durable write per event the
/// disk allows.
pub fn overwrite_fdatasync(path: &Path, frames: &[Vec<u8>], batch: usize) -> Duration {
    let total: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let f = preallocated(path, total + 4096);
    let batch = batch.max(1);
    let mut buf = Vec::new();
    let t = Instant::now();
    let mut off = 0u64;
    for group in frames.chunks(batch) {
        buf.clear();
        for fr in group {
            buf.extend_from_slice(fr);
        }
        f.write_all_at(&buf, off).expect("write");
        off += buf.len() as u64;
        f.sync_data().expect("fdatasync");
    }
    t.elapsed()
}

/// What a raw scan of a log directory found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scan {
    /// Valid frames.
    pub records: u64,
    /// Their bytes, headers included: the log's size without the zero tail.
    pub bytes: u64,
    /// Frames that start a write batch (`batch_index == 0`): the number of group commits.
    pub batches: u64,
}

/// Maps every segment of the engine's log in `wal_dir` and walks its frames, checking
/// each CRC exactly as the format defines it (`docs/format.md`): the least work any replay
/// must do.
pub fn scan_log(wal_dir: &Path) -> Scan {
    scan_log_with(wal_dir, ScanRead::Map)
}

/// How [`scan_log_with`] gets the bytes.
#[derive(Clone, Copy, Debug)]
pub enum ScanRead {
    /// `mmap` each segment (as the engine's replay does).
    Map,
    /// `read` each segment into one reused buffer.
    Read,
}

/// [`scan_log`], reading the segments the way `how` says. Which is faster depends on the
/// moment (page cache state, transparent huge pages), so W4 runs both and takes the
/// faster as the physical limit.
pub fn scan_log_with(wal_dir: &Path, how: ScanRead) -> Scan {
    use session_engine::wal::record::decode_frame;
    use session_engine::wal::segment::SEGMENT_HEADER_LEN;
    use std::io::Read;
    let mut names: Vec<_> = std::fs::read_dir(wal_dir)
        .expect("list log")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    names.sort();
    let mut s = Scan::default();
    let mut buf = Vec::new();
    for path in names {
        let file = std::fs::File::open(&path).expect("open segment");
        let map;
        let bytes: &[u8] = match how {
            ScanRead::Map => {
                // SAFETY: nothing writes the segments while the scan runs.
                map = unsafe { memmap2::Mmap::map(&file) }.expect("map segment");
                &map
            }
            ScanRead::Read => {
                buf.clear();
                (&file).read_to_end(&mut buf).expect("read segment");
                &buf
            }
        };
        let mut pos = SEGMENT_HEADER_LEN;
        // The engine's own frame decoder (length, CRC, LSN, batch field), nothing more.
        while let Ok(f) = decode_frame(&bytes[pos..]) {
            if f.seal {
                // A seal (written at a clean close) is not a record.
                pos += f.len;
                continue;
            }
            if f.batch_index == 0 {
                s.batches += 1;
            }
            s.records += 1;
            s.bytes += f.len as u64;
            pos += f.len;
        }
    }
    s
}

/// The least any reader of the file at `path` must do to trust it: get its bytes and
/// compute one CRC-32 over them. Returns the faster of mapping the file and reading it
/// into a buffer already in memory (only the read and the CRC are timed).
pub fn read_and_check(path: &Path) -> Duration {
    use std::io::Read;
    let len = std::fs::metadata(path).expect("stat").len() as usize;
    let mapped = {
        let f = std::fs::File::open(path).expect("open");
        let t = Instant::now();
        // SAFETY: the benchmark's own file, not modified while mapped.
        let m = unsafe { memmap2::Mmap::map(&f) }.expect("map");
        std::hint::black_box(crc32fast::hash(&m));
        t.elapsed()
    };
    let mut buf = vec![1u8; len];
    let mut f = std::fs::File::open(path).expect("open");
    let t = Instant::now();
    f.read_exact(&mut buf).expect("read");
    std::hint::black_box(crc32fast::hash(&buf));
    mapped.min(t.elapsed())
}

/// Bytes aligned as `O_DIRECT` needs them for 4 KiB blocks.
#[repr(C, align(4096))]
pub struct Aligned<const N: usize>(pub [u8; N]);

/// Opens `path` for writes that bypass the page cache and return once durable.
pub fn open_direct_dsync(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
}

/// Whether the file system under `dir` takes `O_DIRECT | O_DSYNC` writes of aligned 4 KiB
/// blocks (tmpfs, for one, refuses `O_DIRECT`).
pub fn direct_io_supported(dir: &Path) -> bool {
    let path = dir.join("direct-io-probe");
    let ok = (|| {
        drop(preallocated(&path, 4096));
        open_direct_dsync(&path)?.write_all_at(&Aligned([0; 4096]).0, 0)
    })()
    .is_ok();
    let _ = std::fs::remove_file(&path);
    ok
}
