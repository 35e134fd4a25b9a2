//! Reading a CRI container log back for `/containerLogs`, as upstream's
//! `pkg/kubelet/kuberuntime/logs/logs.go` (`ReadLogs`), with the query
//! handling of `getContainerLogs` in `pkg/kubelet/server/server.go` and
//! `ValidatePodLogOptions`.
//!
//! A CRI log line is `<RFC3339Nano time> <stdout|stderr> <P|F> <content>`.
//! Each line's content is written as is; a partial (`P`) line loses its
//! trailing newline, so the partial pieces join into the full line. With
//! `timestamps=true` each piece is prefixed with its time in the fixed
//! `RFC3339NanoFixed` form and a space. `tailLines` counts lines from the end
//! of the file; `limitBytes` cuts the output; `sinceSeconds`/`sinceTime` skip
//! older lines.
//!
//! Not done: the Docker JSON log format (containerd and CRI-O write the CRI
//! format).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::Offset};
use rustix::fs::{FileType, Mode, OFlags};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Error, NodeApi};

/// Upstream's `logForceCheckPeriod`: how often a follower asks whether the
/// container still runs and whether the file was rotated.
const LOG_FORCE_CHECK_PERIOD: Duration = Duration::from_secs(1);
/// Read size: each read of a `tokio::fs::File` is a hop to the blocking
/// pool, so reads are large (with 64 KiB reads 10 MiB were served at
/// 160 MiB/s; with 256 KiB reads and `memchr` line splitting at 383 MiB/s,
/// the agent's `streaming_measure`, machine loaded). With at most `max_log_streams` streams (128
/// by default) at about 400 KiB each, the buffers stay under 64 MiB.
const READ_CHUNK: usize = 256 * 1024;
/// Output is sent to the client in chunks of about this size.
const FLUSH_AT: usize = 128 * 1024;
/// A "line" longer than this without a newline is processed as it is rather
/// than buffered further (runtimes split lines at 16 KiB with `P` tags).
const MAX_LINE: usize = 1024 * 1024;

/// Which streams to return (`stream` query parameter, upstream's
/// `PodLogsQuerySplitStreams`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogStream {
    /// Both (`All`, the default).
    #[default]
    All,
    /// `Stdout` only.
    Stdout,
    /// `Stderr` only.
    Stderr,
}

/// The stream a CRI log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CriStream {
    /// `stdout`
    Stdout,
    /// `stderr`
    Stderr,
}

impl LogStream {
    fn wants(self, s: CriStream) -> bool {
        match self {
            LogStream::All => true,
            LogStream::Stdout => s == CriStream::Stdout,
            LogStream::Stderr => s == CriStream::Stderr,
        }
    }
}

/// The `/containerLogs` query: upstream's `v1.PodLogOptions` turned into
/// `LogOptions` (`NewLogOptions`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    /// `tailLines` (or the legacy `tail`; `tail=all` is no limit).
    pub tail_lines: Option<u64>,
    /// `limitBytes`.
    pub limit_bytes: Option<u64>,
    /// The later of `now - sinceSeconds` and `sinceTime`.
    pub since: Option<Timestamp>,
    /// `follow`.
    pub follow: bool,
    /// `timestamps`.
    pub timestamps: bool,
    /// `previous`.
    pub previous: bool,
    /// `stream`.
    pub stream: LogStream,
}

/// Why a `/containerLogs` query was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogQueryError {
    /// A value does not parse: `400 Unable to decode query.`
    Decode(String),
    /// The options fail `ValidatePodLogOptions`: `422 Invalid request.`
    Invalid(String),
}

/// Go's `strconv.ParseBool`.
fn parse_bool(key: &str, v: &str) -> Result<bool, LogQueryError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(LogQueryError::Decode(format!(
            "{key}: invalid boolean {v:?}"
        ))),
    }
}

fn parse_int(key: &str, v: &str) -> Result<i64, LogQueryError> {
    v.parse::<i64>()
        .map_err(|_| LogQueryError::Decode(format!("{key}: invalid integer {v:?}")))
}

impl LogOptions {
    /// Parses and validates the query string of a `/containerLogs` request
    /// (the first value of a repeated key wins; unknown keys are ignored).
    pub fn from_query(query: Option<&str>, now: Timestamp) -> Result<LogOptions, LogQueryError> {
        let mut tail_lines: Option<i64> = None;
        let mut legacy_tail: Option<String> = None;
        let mut limit_bytes: Option<i64> = None;
        let mut since_seconds: Option<i64> = None;
        let mut since_time: Option<Timestamp> = None;
        let mut follow = None;
        let mut timestamps = None;
        let mut previous = None;
        let mut stream = None;
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k {
                "tailLines" if tail_lines.is_none() => tail_lines = Some(parse_int(k, v)?),
                "tail" if legacy_tail.is_none() => legacy_tail = Some(v.to_string()),
                "limitBytes" if limit_bytes.is_none() => limit_bytes = Some(parse_int(k, v)?),
                "sinceSeconds" if since_seconds.is_none() => since_seconds = Some(parse_int(k, v)?),
                "sinceTime" if since_time.is_none() => {
                    since_time = Some(
                        v.parse::<Timestamp>()
                            .map_err(|e| LogQueryError::Decode(format!("sinceTime: {e}")))?,
                    )
                }
                "follow" if follow.is_none() => follow = Some(parse_bool(k, v)?),
                "timestamps" if timestamps.is_none() => timestamps = Some(parse_bool(k, v)?),
                "previous" if previous.is_none() => previous = Some(parse_bool(k, v)?),
                "stream" if stream.is_none() => {
                    stream = Some(match v {
                        "All" => LogStream::All,
                        "Stdout" => LogStream::Stdout,
                        "Stderr" => LogStream::Stderr,
                        other => {
                            return Err(LogQueryError::Invalid(format!(
                                "stream: unsupported value {other:?}"
                            )));
                        }
                    })
                }
                _ => {}
            }
        }
        // Backwards compatibility for the "tail" parameter (server.go).
        if let Some(t) = legacy_tail.filter(|t| !t.is_empty()) {
            tail_lines = if t == "all" {
                None
            } else {
                Some(parse_int("tail", &t)?)
            };
        }
        // ValidatePodLogOptions.
        if tail_lines.is_some_and(|t| t < 0) {
            return Err(LogQueryError::Invalid("tailLines must be >= 0".into()));
        }
        if limit_bytes.is_some_and(|b| b < 1) {
            return Err(LogQueryError::Invalid("limitBytes must be > 0".into()));
        }
        if since_seconds.is_some() && since_time.is_some() {
            return Err(LogQueryError::Invalid(
                "at most one of sinceTime or sinceSeconds may be specified".into(),
            ));
        }
        if since_seconds.is_some_and(|s| s < 1) {
            return Err(LogQueryError::Invalid("sinceSeconds must be > 0".into()));
        }
        let stream = stream.unwrap_or_default();
        if stream != LogStream::All && tail_lines.is_some() {
            return Err(LogQueryError::Invalid(
                "tailLines is not supported when a specific stream is requested".into(),
            ));
        }
        let mut since = since_seconds.map(|s| {
            now.checked_sub(SignedDuration::from_secs(s))
                .unwrap_or(Timestamp::MIN)
        });
        if let Some(t) = since_time
            && since.is_none_or(|s| t > s)
        {
            since = Some(t);
        }
        Ok(LogOptions {
            tail_lines: tail_lines.map(|t| t as u64),
            limit_bytes: limit_bytes.map(|b| b as u64),
            since,
            follow: follow.unwrap_or(false),
            timestamps: timestamps.unwrap_or(false),
            previous: previous.unwrap_or(false),
            stream,
        })
    }
}

/// One parsed CRI log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriMessage<'a> {
    /// When it was written.
    pub timestamp: Timestamp,
    /// The UTC offset of the written time, in seconds (kept for output).
    pub offset_seconds: i32,
    /// Which stream.
    pub stream: CriStream,
    /// Whether the line is a partial (`P`) piece.
    pub partial: bool,
    /// The content; a full line keeps its newline, a partial one loses it.
    pub content: &'a [u8],
}

/// The form containerd writes, `2006-01-02T15:04:05.999999999Z` (UTC,
/// trailing zeros of the fraction trimmed), parsed by hand: the general
/// RFC 3339 parser was most of the cost of serving a large log (about
/// 400 ns a line). `None` for anything else, which the general parser
/// then reads.
fn parse_utc_fast(s: &[u8]) -> Option<Timestamp> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    }
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || s[10] != b'T'
        || s[13] != b':'
        || s[16] != b':'
        || *s.last()? != b'Z'
    {
        return None;
    }
    let (year, month, day) = (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?);
    let (hour, minute, second) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
    let nanos = match &s[19..s.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            num(digits)? * 10i64.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    // Checked: a day past the end of its month (02-30) is refused.
    let dt = k8s_openapi::jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        i32::try_from(nanos).ok()?,
    )
    .ok()?;
    Offset::UTC.to_timestamp(dt).ok()
}

fn parse_time(s: &str) -> Option<(Timestamp, i32)> {
    if let Some(ts) = parse_utc_fast(s.as_bytes()) {
        return Some((ts, 0));
    }
    let ts: Timestamp = s.parse().ok()?;
    let offset = if s.ends_with('Z') || s.ends_with('z') {
        0
    } else {
        let tail = s.get(s.len().checked_sub(6)?..)?;
        let sign = match tail.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let h: i32 = tail.get(1..3)?.parse().ok()?;
        let m: i32 = tail.get(4..6)?.parse().ok()?;
        sign * (h * 3600 + m * 60)
    };
    Some((ts, offset))
}

/// Parses one CRI log line (upstream's `parseCRILog`). `None` when it is not
/// in the CRI format.
pub fn parse_cri_line(line: &[u8]) -> Option<CriMessage<'_>> {
    let i = line.iter().position(|&b| b == b' ')?;
    let (timestamp, offset_seconds) = parse_time(std::str::from_utf8(&line[..i]).ok()?)?;
    let rest = &line[i + 1..];
    let j = rest.iter().position(|&b| b == b' ')?;
    let stream = match &rest[..j] {
        b"stdout" => CriStream::Stdout,
        b"stderr" => CriStream::Stderr,
        _ => return None,
    };
    let rest = &rest[j + 1..];
    let k = rest.iter().position(|&b| b == b' ')?;
    // Tags are ':'-separated; keep this forward compatible.
    let partial = rest[..k].split(|&b| b == b':').next() == Some(b"P");
    let mut content = &rest[k + 1..];
    if partial && content.last() == Some(&b'\n') {
        content = &content[..content.len() - 1];
    }
    Some(CriMessage {
        timestamp,
        offset_seconds,
        stream,
        partial,
        content,
    })
}

/// Upstream's `RFC3339NanoFixed`: `2006-01-02T15:04:05.000000000Z07:00`.
pub fn format_timestamp_fixed(ts: Timestamp, offset_seconds: i32) -> String {
    let offset = Offset::from_seconds(offset_seconds).unwrap_or(Offset::UTC);
    let dt = offset.to_datetime(ts);
    let off = if offset_seconds == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_seconds < 0 { '-' } else { '+' };
        let a = offset_seconds.unsigned_abs();
        format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}{}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond(),
        off
    )
}

/// Upstream's `logWriter`: applies since, the stream filter, timestamps and
/// the byte limit.
struct LogWriter {
    since: Option<Timestamp>,
    timestamps: bool,
    stream: LogStream,
    remain: u64,
}

impl LogWriter {
    fn new(opts: &LogOptions) -> Self {
        LogWriter {
            since: opts.since,
            timestamps: opts.timestamps,
            stream: opts.stream,
            remain: opts.limit_bytes.unwrap_or(u64::MAX),
        }
    }

    /// Appends the message to `out`; `false` once the byte limit is reached.
    fn write(&mut self, msg: &CriMessage<'_>, out: &mut Vec<u8>) -> bool {
        if self.since.is_some_and(|s| msg.timestamp < s) || !self.stream.wants(msg.stream) {
            return true;
        }
        let start = out.len();
        if self.timestamps {
            out.extend_from_slice(
                format_timestamp_fixed(msg.timestamp, msg.offset_seconds).as_bytes(),
            );
            out.push(b' ');
        }
        out.extend_from_slice(msg.content);
        let written = (out.len() - start) as u64;
        if written > self.remain {
            out.truncate(start + self.remain as usize);
            self.remain = 0;
        } else {
            self.remain -= written;
        }
        self.remain > 0
    }
}

/// Renders a whole CRI log held in memory with `opts` (no follow): what
/// `/containerLogs` serves for a file with these contents.
pub fn render(log: &[u8], opts: &LogOptions) -> Vec<u8> {
    let start = tail_start_in(log, opts.tail_lines);
    let mut out = Vec::new();
    let mut state = ReadState::new(opts);
    let mut rest = &log[start..];
    while !rest.is_empty() {
        let (line, r) = match memchr::memchr(b'\n', rest) {
            Some(i) => rest.split_at(i + 1),
            None => (rest, &[][..]),
        };
        rest = r;
        if !state.line(line, &mut out) {
            break;
        }
    }
    out
}

/// Where the last `n` lines of `buf` start (upstream's
/// `tail.FindTailLineStartIndex`, on a buffer).
fn tail_start_in(buf: &[u8], n: Option<u64>) -> usize {
    let Some(n) = n else { return 0 };
    let mut count = 0u64;
    for (i, &b) in buf.iter().enumerate().rev() {
        if b == b'\n' {
            count += 1;
            if count > n {
                return i + 1;
            }
        }
    }
    0
}

/// Upstream's `tail.FindTailLineStartIndex`: reads backwards in blocks,
/// counting newlines, and returns the offset where the last `n` lines start.
fn find_tail_start(f: &mut std::fs::File, n: u64) -> std::io::Result<u64> {
    const BLOCK: u64 = 1024;
    let size = f.seek(SeekFrom::End(0))?;
    let mut right = size;
    let mut count = 0u64;
    let mut buf = vec![0u8; BLOCK as usize];
    while right > 0 {
        let left = right.saturating_sub(BLOCK);
        let len = (right - left) as usize;
        f.seek(SeekFrom::Start(left))?;
        f.read_exact(&mut buf[..len])?;
        for (i, &b) in buf[..len].iter().enumerate().rev() {
            if b == b'\n' {
                count += 1;
                if count > n {
                    return Ok(left + i as u64 + 1);
                }
            }
        }
        right = left;
    }
    Ok(0)
}

/// The per-read state of `ReadLogs`: the writer and the line budget of
/// limited mode (`tailLines` without `follow`).
struct ReadState {
    writer: LogWriter,
    limited: Option<u64>,
}

impl ReadState {
    fn new(opts: &LogOptions) -> Self {
        ReadState {
            writer: LogWriter::new(opts),
            limited: if opts.follow { None } else { opts.tail_lines },
        }
    }

    /// Handles one line; `false` when reading must stop.
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        if self.limited == Some(0) {
            return false;
        }
        let Some(msg) = parse_cri_line(line) else {
            tracing::debug!(
                line = %String::from_utf8_lossy(&line[..line.len().min(200)]),
                "skipping a container log line not in the CRI format"
            );
            return true;
        };
        if !self.writer.write(&msg, out) {
            return false;
        }
        if let Some(n) = self.limited.as_mut() {
            *n -= 1;
            if *n == 0 {
                return false;
            }
        }
        true
    }
}

/// Opens a container log file for reading without following a symlink in
/// its last two components: the directory is opened `O_DIRECTORY |
/// O_NOFOLLOW`, the file `O_NOFOLLOW | O_NONBLOCK` relative to it, and the
/// file must be a regular file (no FIFO or device can block or flood the
/// reader).
pub fn open_log_file(path: &Path) -> Result<std::fs::File, Error> {
    let unsafe_file = || Error::UnsafeLogFile(path.to_path_buf());
    let io_err = |e: rustix::io::Errno| Error::Log {
        path: path.to_path_buf(),
        source: e.into(),
    };
    let name = path.file_name().ok_or_else(unsafe_file)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let refuse_links = |e: rustix::io::Errno| {
        if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
            unsafe_file()
        } else {
            io_err(e)
        }
    };
    let dir = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(refuse_links)?;
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(refuse_links)?;
    let st = rustix::fs::fstat(&fd).map_err(io_err)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(unsafe_file());
    }
    Ok(std::fs::File::from(fd))
}

/// What a follower needs beyond the file.
pub(crate) struct Follow {
    pub host: Arc<dyn NodeApi>,
    pub container_id: Option<String>,
    pub shutdown: CancellationToken,
    /// How often to look for new data at the end of the file.
    pub poll_interval: Duration,
}

/// Whether `path` now names another file than `file` (rotated or removed).
async fn replaced(path: &Path, file: &tokio::fs::File) -> bool {
    let Ok(ours) = file.metadata().await else {
        return false;
    };
    match tokio::fs::symlink_metadata(path).await {
        Ok(now) => now.dev() != ours.dev() || now.ino() != ours.ino(),
        Err(_) => false,
    }
}

/// Streams the log in `file` to `tx` following `opts` (upstream's
/// `ReadLogs`). With `follow`, keeps reading new lines until the client
/// goes away (`tx` closes), the server shuts down, or the container stops,
/// polling the end of the file every `poll_interval`; a rotated file is
/// reopened (safely) from its start.
pub(crate) async fn stream_log(
    file: std::fs::File,
    path: PathBuf,
    opts: LogOptions,
    follow: Option<Follow>,
    tx: mpsc::Sender<Bytes>,
) -> Result<(), Error> {
    let log_err = |source: std::io::Error| Error::Log {
        path: path.clone(),
        source,
    };
    let (file, start) = match opts.tail_lines {
        Some(n) => {
            let mut file = file;
            tokio::task::spawn_blocking(move || {
                find_tail_start(&mut file, n).map(|start| (file, start))
            })
            .await
            .map_err(|e| log_err(std::io::Error::other(e)))?
            .map_err(log_err)?
        }
        None => (file, 0),
    };
    let mut file = tokio::fs::File::from_std(file);
    file.seek(SeekFrom::Start(start)).await.map_err(log_err)?;

    let mut state = ReadState::new(&opts);
    let mut pending: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(FLUSH_AT * 2);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut last_check = Instant::now();
    let mut finishing = false;

    loop {
        let n = file.read(&mut chunk).await.map_err(log_err)?;
        if n > 0 {
            pending.extend_from_slice(&chunk[..n]);
            let mut consumed = 0;
            let mut stop = false;
            while let Some(i) = memchr::memchr(b'\n', &pending[consumed..]) {
                let end = consumed + i + 1;
                if !state.line(&pending[consumed..end], &mut out) {
                    stop = true;
                    break;
                }
                consumed = end;
            }
            if !stop && pending.len() - consumed > MAX_LINE {
                stop = !state.line(&pending[consumed..], &mut out);
                consumed = pending.len();
            }
            pending.drain(..consumed);
            if stop {
                break;
            }
            if out.len() >= FLUSH_AT
                && tx
                    .send(Bytes::from(std::mem::take(&mut out)))
                    .await
                    .is_err()
            {
                return Ok(());
            }
            continue;
        }
        // End of file.
        let Some(f) = follow.as_ref() else {
            // Upstream writes an incomplete last line, then stops.
            if !pending.is_empty() {
                state.line(&pending, &mut out);
            }
            break;
        };
        if !out.is_empty()
            && tx
                .send(Bytes::from(std::mem::take(&mut out)))
                .await
                .is_err()
        {
            return Ok(());
        }
        if finishing {
            break;
        }
        if last_check.elapsed() >= LOG_FORCE_CHECK_PERIOD {
            last_check = Instant::now();
            if let Some(id) = &f.container_id
                && !f.host.container_running(id).await
            {
                // Consume what was written until the next end of file.
                finishing = true;
                continue;
            }
            if replaced(&path, &file).await {
                match open_log_file(&path) {
                    Ok(new) => {
                        tracing::debug!(path = %path.display(), "container log rotated, reopening");
                        file = tokio::fs::File::from_std(new);
                        pending.clear();
                        continue;
                    }
                    Err(e) => tracing::debug!(error = %e, "container log not reopened yet"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(f.poll_interval) => {}
            _ = tx.closed() => return Ok(()),
            _ = f.shutdown.cancelled() => break,
        }
    }
    if !out.is_empty() {
        let _ = tx.send(Bytes::from(out)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2016-10-06T00:17:09.669794202Z stdout P part one \n\
2016-10-06T00:17:09.669794203Z stdout F and two\n\
2016-10-06T00:17:10.000000000Z stderr F err line\n\
not a cri line\n\
2016-10-06T00:17:11.5+02:00 stdout F last\n";

    fn now() -> Timestamp {
        "2016-10-06T00:17:12Z".parse().unwrap()
    }

    #[test]
    fn the_fast_utc_parser_agrees_with_the_general_one() {
        for s in [
            "2016-10-06T00:17:09.669794202Z",
            "2016-10-06T00:17:09.669794Z",
            "2016-10-06T00:17:09.6Z",
            "2016-10-06T00:17:09Z",
            "2024-02-29T23:59:59.999999999Z",
            "1970-01-01T00:00:00Z",
        ] {
            let fast = parse_utc_fast(s.as_bytes()).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(fast, s.parse::<Timestamp>().unwrap(), "{s}");
        }
        for s in [
            "2023-02-29T00:00:00Z",
            "2016-13-06T00:17:09Z",
            "2016-10-06T24:17:09Z",
            "2016-10-06T00:17:09.Z",
            "2016-10-06T00:17:09.1234567890Z",
            "2016-10-06T00:17:09+02:00",
            "2016-10-06 00:17:09Z",
            "2016-1a-06T00:17:09Z",
        ] {
            assert_eq!(parse_utc_fast(s.as_bytes()), None, "{s}");
        }
        // Offsets still parse, through the general parser.
        assert_eq!(
            parse_time("2016-10-06T02:17:09.5+02:00").map(|(t, o)| (t.as_second(), o)),
            Some((1_475_713_029, 7200))
        );
    }

    #[test]
    fn parses_cri_lines() {
        let m = parse_cri_line(b"2016-10-06T00:17:09.669794202Z stdout P log content 1\n").unwrap();
        assert_eq!(m.stream, CriStream::Stdout);
        assert!(m.partial);
        assert_eq!(m.content, b"log content 1");
        let m =
            parse_cri_line(b"2016-10-06T00:17:09.669794203Z stderr F:x log content 2\n").unwrap();
        assert_eq!(m.stream, CriStream::Stderr);
        assert!(!m.partial);
        assert_eq!(m.content, b"log content 2\n");
        assert!(parse_cri_line(b"2016-10-06T00:17:09Z stdin F x\n").is_none());
        assert!(parse_cri_line(b"yesterday stdout F x\n").is_none());
    }

    #[test]
    fn joins_partials_and_strips_prefix() {
        let opts = LogOptions::default();
        assert_eq!(render(LOG, &opts), b"part one and two\nerr line\nlast\n");
    }

    #[test]
    fn timestamps_use_the_fixed_nano_format_and_keep_the_offset() {
        let opts = LogOptions {
            timestamps: true,
            ..LogOptions::default()
        };
        let out = String::from_utf8(render(LOG, &opts)).unwrap();
        assert_eq!(
            out,
            "2016-10-06T00:17:09.669794202Z part one 2016-10-06T00:17:09.669794203Z and two\n\
2016-10-06T00:17:10.000000000Z err line\n\
2016-10-06T00:17:11.500000000+02:00 last\n"
        );
    }

    #[test]
    fn tail_limit_since_and_stream() {
        let tail = LogOptions::from_query(Some("tailLines=2"), now()).unwrap();
        // The last two file lines: one is not CRI (skipped), then "last".
        assert_eq!(render(LOG, &tail), b"last\n");
        let tail = LogOptions::from_query(Some("tailLines=3"), now()).unwrap();
        assert_eq!(render(LOG, &tail), b"err line\nlast\n");
        let limit = LogOptions::from_query(Some("limitBytes=12"), now()).unwrap();
        assert_eq!(render(LOG, &limit), b"part one and");
        let since = LogOptions::from_query(Some("sinceTime=2016-10-06T00:17:10Z"), now()).unwrap();
        // "last" was written at 00:17:11.5+02:00, before 00:17:10Z.
        assert_eq!(render(LOG, &since), b"err line\n");
        let since = LogOptions::from_query(Some("sinceSeconds=1"), now()).unwrap();
        // now - 1s = 00:17:11Z; "last" is 00:17:11.5+02:00 = 22:17:11.5Z the day before.
        assert_eq!(render(LOG, &since), b"");
        let stderr = LogOptions::from_query(Some("stream=Stderr"), now()).unwrap();
        assert_eq!(render(LOG, &stderr), b"err line\n");
        let all = LogOptions::from_query(Some("tail=all"), now()).unwrap();
        assert_eq!(all.tail_lines, None);
    }

    #[test]
    fn query_validation_matches_upstream() {
        use LogQueryError::*;
        assert!(matches!(
            LogOptions::from_query(Some("tailLines=x"), now()),
            Err(Decode(_))
        ));
        assert!(matches!(
            LogOptions::from_query(Some("follow=yes"), now()),
            Err(Decode(_))
        ));
        assert!(matches!(
            LogOptions::from_query(Some("tailLines=-1"), now()),
            Err(Invalid(_))
        ));
        assert!(matches!(
            LogOptions::from_query(Some("limitBytes=0"), now()),
            Err(Invalid(_))
        ));
        assert!(matches!(
            LogOptions::from_query(Some("sinceSeconds=0"), now()),
            Err(Invalid(_))
        ));
        assert!(matches!(
            LogOptions::from_query(Some("sinceSeconds=5&sinceTime=2016-10-06T00:17:10Z"), now()),
            Err(Invalid(_))
        ));
        let o =
            LogOptions::from_query(Some("follow=true&timestamps=1&previous=True&tail=5"), now())
                .unwrap();
        assert!(o.follow && o.timestamps && o.previous);
        assert_eq!(o.tail_lines, Some(5));
    }

    #[test]
    fn file_tail_matches_buffer_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let mut content = Vec::new();
        for i in 0..3000 {
            content
                .extend_from_slice(format!("2016-10-06T00:17:09Z stdout F line {i}\n").as_bytes());
        }
        std::fs::write(&p, &content).unwrap();
        let mut f = open_log_file(&p).unwrap();
        for n in [0u64, 1, 2, 100, 2999, 3000, 5000] {
            let start = find_tail_start(&mut f, n).unwrap();
            assert_eq!(start as usize, tail_start_in(&content, Some(n)), "n={n}");
        }
    }

    #[test]
    fn refuses_symlinks_and_non_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.log");
        std::fs::write(&real, b"x").unwrap();
        let link = dir.path().join("0.log");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(open_log_file(&link), Err(Error::UnsafeLogFile(_))));
        // A symlinked container directory is refused too.
        let ctr = dir.path().join("ctr");
        std::os::unix::fs::symlink(dir.path(), &ctr).unwrap();
        assert!(matches!(
            open_log_file(&ctr.join("real.log")),
            Err(Error::UnsafeLogFile(_))
        ));
        assert!(matches!(
            open_log_file(dir.path()),
            Err(Error::UnsafeLogFile(_))
        ));
        assert!(open_log_file(&real).is_ok());
        assert!(matches!(
            open_log_file(&dir.path().join("missing")),
            Err(Error::Log { .. })
        ));
    }
}
