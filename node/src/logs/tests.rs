//! Tests of the CRI log writer and reader over real files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use tokio::sync::watch;

use super::format::{self, MAX_LINE};
use super::*;

/// Upper bound on any wait in these tests, so a bug fails instead of hanging.
const GUARD: Duration = Duration::from_secs(20);

fn log_path(dir: &Path) -> PathBuf {
    container_log_path(&pod_log_dir(dir, "default", "web", "uid-1"), "app", 0)
}

fn lines(path: &Path) -> Vec<(Stream, bool, Vec<u8>)> {
    let text = std::fs::read(path).expect("read log");
    text.split_inclusive(|b| *b == b'\n')
        .map(|line| {
            assert_eq!(line.last(), Some(&b'\n'), "every CRI line ends in a newline");
            let e = format::parse(line).expect("a CRI line");
            (e.stream, e.partial, e.content.to_vec())
        })
        .collect()
}

fn full(stream: Stream, s: &str) -> (Stream, bool, Vec<u8>) {
    (stream, false, s.as_bytes().to_vec())
}

async fn read_all(files: LogFiles, opts: LogOptions) -> String {
    let stream = stream_logs(files, opts).await.expect("open logs");
    let chunks: Vec<_> = tokio::time::timeout(GUARD, stream.collect()).await.expect("stream ends");
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    String::from_utf8(out).expect("utf-8")
}

/// The next chunk of an open stream, as text.
async fn next_text<S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin>(stream: &mut S) -> String {
    let chunk = tokio::time::timeout(GUARD, stream.next()).await.expect("a chunk in time");
    String::from_utf8(chunk.expect("stream open").expect("chunk").to_vec()).expect("utf-8")
}

/// Writes a CRI file by hand with chosen timestamps: `(second, stream, partial, content)`.
fn write_cri(path: &Path, entries: &[(i64, Stream, bool, &str)]) {
    let mut out = Vec::new();
    for (sec, stream, partial, content) in entries {
        let ts = format::timestamp(Timestamp::from_second(1_700_000_000 + sec).expect("ts"));
        format::encode(&mut out, &ts, *stream, *partial, content.as_bytes());
    }
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, out).expect("write");
}

#[test]
fn layout_is_kubernetes() {
    let p = log_path(Path::new("/var/log/pods"));
    assert_eq!(p, Path::new("/var/log/pods/default_web_uid-1/app/0.log"));
}

#[test]
fn full_lines_per_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(dir.path());
    let writer = LogWriter::create(path.clone(), Rotation::default()).expect("writer");
    writer.write(Stream::Stdout, b"hello\nworld\n").expect("write");
    writer.write(Stream::Stderr, b"oops\r\n\n").expect("write");
    assert_eq!(
        lines(&path),
        vec![
            full(Stream::Stdout, "hello"),
            full(Stream::Stdout, "world"),
            full(Stream::Stderr, "oops"),
            full(Stream::Stderr, "")
        ]
    );
    let raw = std::fs::read_to_string(&path).expect("read");
    let first = raw.lines().next().expect("a line");
    let ts = first.split(' ').next().expect("ts");
    assert!(ts.ends_with('Z') && ts.len() == "2024-01-01T00:00:00.000000000Z".len(), "RFC3339Nano UTC: {ts}");
    assert!(first.ends_with(" stdout F hello"), "{first}");
}

#[test]
fn long_line_is_split_into_partial_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(dir.path());
    let writer = LogWriter::create(path.clone(), Rotation::default()).expect("writer");
    let long = "x".repeat(2 * MAX_LINE + 100);
    writer.write(Stream::Stdout, format!("{long}\n").as_bytes()).expect("write");
    let got = lines(&path);
    let shape: Vec<(bool, usize)> = got.iter().map(|(_, p, c)| (*p, c.len())).collect();
    assert_eq!(shape, vec![(true, MAX_LINE), (true, MAX_LINE), (false, 100)]);
}

#[test]
fn partial_line_waits_for_newline_or_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(dir.path());
    let writer = Arc::new(LogWriter::create(path.clone(), Rotation::default()).expect("writer"));
    let out = writer.sink(Stream::Stdout);
    let err = writer.sink(Stream::Stderr);
    out.write(b"abc");
    err.write(b"e1");
    assert!(lines(&path).is_empty(), "nothing before a newline");
    out.write(b"def\nghi");
    assert_eq!(lines(&path), vec![full(Stream::Stdout, "abcdef")]);
    // A tail longer than one CRI line goes out as P chunks right away.
    err.write("y".repeat(MAX_LINE + 5).as_bytes());
    assert_eq!(lines(&path).len(), 2);
    assert!(lines(&path)[1].1, "a P chunk");
    drop((out, err));
    drop(writer);
    let got = lines(&path);
    assert_eq!(got.len(), 4);
    assert_eq!(got[2], full(Stream::Stdout, "ghi"));
    // The P chunk took "e1" and the first y's; 7 y's were left for the flush.
    assert_eq!(got[3], (Stream::Stderr, false, "y".repeat(7).into_bytes()));
}

#[tokio::test]
async fn reader_joins_partials_and_prints_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(dir.path());
    write_cri(
        &path,
        &[
            (0, Stream::Stdout, false, "one"),
            (1, Stream::Stdout, true, "tw"),
            (2, Stream::Stdout, false, "o"),
            (3, Stream::Stderr, false, ""),
        ],
    );
    assert_eq!(read_all(LogFiles::finished(path.clone()), LogOptions::default()).await, "one\ntwo\n\n");
    let with_ts = read_all(LogFiles::finished(path), LogOptions { timestamps: true, ..Default::default() }).await;
    assert_eq!(
        with_ts,
        "2023-11-14T22:13:20.000000000Z one\n2023-11-14T22:13:21.000000000Z two\n2023-11-14T22:13:23.000000000Z \n"
    );
}

#[tokio::test]
async fn reader_round_trips_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(dir.path());
    let long = "z".repeat(3 * MAX_LINE + 7);
    {
        let writer = LogWriter::create(path.clone(), Rotation::default()).expect("writer");
        writer.write(Stream::Stdout, b"a\nb").expect("write");
        writer.write(Stream::Stdout, format!("{long}\nc").as_bytes()).expect("write");
    }
    assert_eq!(read_all(LogFiles::finished(path), LogOptions::default()).await, format!("a\nb{long}\nc\n"));
}

#[tokio::test]
async fn tail_since_and_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(dir.path());
    write_cri(
        &path,
        &[
            (0, Stream::Stdout, false, "l0"),
            (1, Stream::Stdout, false, "l1"),
            (2, Stream::Stdout, true, "l2-"),
            (2, Stream::Stdout, false, "cont"),
            (3, Stream::Stderr, false, "l3"),
        ],
    );
    let read = |opts: LogOptions| read_all(LogFiles::finished(path.clone()), opts);
    assert_eq!(read(LogOptions { tail_lines: Some(2), ..Default::default() }).await, "l2-cont\nl3\n");
    assert_eq!(read(LogOptions { tail_lines: Some(0), ..Default::default() }).await, "");
    assert_eq!(read(LogOptions { tail_lines: Some(99), ..Default::default() }).await, "l0\nl1\nl2-cont\nl3\n");
    assert_eq!(read(LogOptions { tail_lines: Some(-1), ..Default::default() }).await, "l0\nl1\nl2-cont\nl3\n");
    let since = Timestamp::from_second(1_700_000_001).expect("ts");
    assert_eq!(read(LogOptions { since: Some(since), ..Default::default() }).await, "l1\nl2-cont\nl3\n");
    assert_eq!(
        read(LogOptions { since: Some(since), tail_lines: Some(3), limit_bytes: Some(6), ..Default::default() }).await,
        "l1\nl2-"
    );
    assert_eq!(read(LogOptions { limit_bytes: Some(4), ..Default::default() }).await, "l0\nl");
}

#[tokio::test]
async fn rotation_keeps_order_and_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(dir.path());
    let writer = LogWriter::create(path.clone(), Rotation { max_size: 200, max_files: 100 }).expect("writer");
    let expected: String = (0..40).map(|i| format!("line {i}\n")).collect();
    for i in 0..40 {
        writer.write(Stream::Stdout, format!("line {i}\n").as_bytes()).expect("write");
    }
    let rotated = writer::rotated_files(&path).expect("list");
    assert!(rotated.len() >= 5, "rotated {} times", rotated.len());
    assert_eq!(read_all(LogFiles::finished(path.clone()), LogOptions::default()).await, expected);
    let tail =
        read_all(LogFiles::finished(path.clone()), LogOptions { tail_lines: Some(30), ..Default::default() }).await;
    assert_eq!(tail, expected.lines().skip(10).map(|l| format!("{l}\n")).collect::<String>());

    let small = LogWriter::create(dir.path().join("other/0.log"), Rotation { max_size: 100, max_files: 2 }).expect("w");
    for i in 0..50 {
        small.write(Stream::Stdout, format!("line {i}\n").as_bytes()).expect("write");
    }
    assert_eq!(writer::rotated_files(small.path()).expect("list").len(), 2, "oldest rotated files removed");
    let rest = read_all(LogFiles::finished(small.path().to_path_buf()), LogOptions::default()).await;
    assert!(rest.ends_with("line 48\nline 49\n"), "{rest}");
    let numbers: Vec<u32> = rest.lines().map(|l| l.trim_start_matches("line ").parse().expect("number")).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "contiguous and ordered: {numbers:?}");
}

#[tokio::test]
async fn follow_sees_new_lines_across_rotation_and_ends_when_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(dir.path());
    let writer = Arc::new(LogWriter::create(path.clone(), Rotation { max_size: 300, max_files: 50 }).expect("w"));
    writer.write(Stream::Stdout, b"before\n").expect("write");
    let (running_tx, running_rx) = watch::channel(true);
    let stream =
        stream_logs(LogFiles::running(path.clone(), running_rx), LogOptions { follow: true, ..Default::default() })
            .await
            .expect("open");
    let mut stream = Box::pin(stream);
    let mut seen = String::new();
    while !seen.contains("before\n") {
        seen.push_str(&next_text(&mut stream).await);
    }
    // The stream is idle now, still open; new lines (across several rotations) arrive.
    let expected: String = (0..30).map(|i| format!("new line {i}\n")).collect();
    for i in 0..30 {
        writer.write(Stream::Stdout, format!("new line {i}\n").as_bytes()).expect("write");
    }
    while seen.len() < "before\n".len() + expected.len() {
        seen.push_str(&next_text(&mut stream).await);
    }
    assert_eq!(seen, format!("before\n{expected}"));
    assert!(!writer::rotated_files(&path).expect("list").is_empty(), "the test crossed a rotation");
    // The container's last words, then it stops: they are delivered and the stream ends.
    writer.write(Stream::Stderr, b"bye").expect("write");
    writer.flush().expect("flush");
    running_tx.send(false).expect("send");
    let rest: Vec<_> = tokio::time::timeout(GUARD, stream.collect::<Vec<_>>()).await.expect("stream ends");
    let rest: String =
        rest.into_iter().map(|c| String::from_utf8(c.expect("chunk").to_vec()).expect("utf-8")).collect();
    assert_eq!(rest, "bye\n");
}

#[tokio::test]
async fn missing_file_is_an_error_up_front() {
    let dir = tempfile::tempdir().expect("tempdir");
    let result = stream_logs(LogFiles::finished(log_path(dir.path())), LogOptions::default()).await;
    assert_eq!(result.err().map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
}
