//! `ferry echo serve|send`: the echo services of ferry-net behind flags, and a client that is
//! interactive on a terminal, line-by-line on a pipe, an uploader, or a load generator.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use ferry_net::echo::client::{self, FramedClient};
use ferry_net::echo::{
    self as service, Auth, Config, EXIT, EchoError, Framing, Mode, Service, tcp, udp,
};
use ferry_net::frame::Format;
use ferry_net::handshake::{Algorithm, CHALLENGE_LEN, Key};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::info;

/// Served when neither --tcp nor --udp is given.
const DEFAULT_TCP: &str = "127.0.0.1:7007";
/// How long each handshake step may take, on both sides.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);
/// How long the client waits for a server's greeting before it sends anything; the greeting
/// protocol's `Welcome!` must not run into the first reply.
const GREETING_WAIT: Duration = Duration::from_millis(250);
/// How long the client waits for the first byte of a reply.
const REPLY_WAIT: Duration = Duration::from_secs(10);
/// A reply is complete once it is as long as the message and then nothing more arrives for
/// this long (a greeting reply is longer than its message).
const REPLY_QUIET: Duration = Duration::from_millis(20);
/// How long the UDP client waits for an answer before it reports the datagram as lost.
const UDP_WAIT: Duration = Duration::from_secs(2);

/// The `ferry echo` subcommands.
#[derive(Debug, Subcommand)]
pub enum EchoCommand {
    /// Serve echo (RFC 862), upper-case or greeting messages over TCP and/or UDP.
    Serve(ServeArgs),
    /// Talk to an echo server: lines from stdin, one upload, or a load test.
    Send(SendArgs),
}

/// What the server answers (unframed messages).
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// The bytes themselves.
    Echo,
    /// The bytes in ASCII upper case.
    Upper,
    /// `Welcome!` on connect, `Hello, <msg>!` per message, close on `exit`.
    Greet,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Echo => Mode::Echo,
            ModeArg::Upper => Mode::Upper,
            ModeArg::Greet => Mode::Greet,
        }
    }
}

/// The HMAC handshake flags, the same on both sides.
#[derive(Debug, Args)]
struct AuthArgs {
    /// File holding the shared key (a trailing newline is ignored); TCP clients must prove
    /// they hold it before anything else.
    #[arg(long, value_name = "F")]
    secret_file: Option<PathBuf>,
    /// HMAC-MD5 instead of HMAC-SHA256 (what the classic programs use).
    #[arg(long, requires = "secret_file")]
    md5: bool,
    /// The client also challenges the server, so both sides know the other holds the key.
    #[arg(long, requires = "secret_file")]
    mutual: bool,
}

/// Flags of `ferry echo serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve TCP on [default: 127.0.0.1:7007 when --udp is not given].
    #[arg(long, value_name = "ADDR")]
    tcp: Option<SocketAddr>,
    /// Address to serve UDP on.
    #[arg(long, value_name = "ADDR")]
    udp: Option<SocketAddr>,
    /// What the server answers to unframed messages [default: echo].
    #[arg(long, value_enum, conflicts_with = "framed")]
    mode: Option<ModeArg>,
    #[command(flatten)]
    auth: AuthArgs,
    /// TCP messages are frames (4-byte length, JSON header, body); `put` frames are uploads,
    /// other frames come back as they are.
    #[arg(long)]
    framed: bool,
    /// Classic frame format: little-endian i32 header length, body size in `filesize`.
    #[arg(long, requires = "framed")]
    classic: bool,
    /// Directory where `put` uploads are saved (created when missing); without it uploads
    /// are refused.
    #[arg(long, value_name = "DIR", requires = "framed")]
    dir: Option<PathBuf>,
}

/// Flags of `ferry echo send`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("framing").args(["framed", "put"]).multiple(true)))]
pub struct SendArgs {
    /// Server address, HOST:PORT.
    addr: String,
    /// Send datagrams instead of a TCP stream.
    #[arg(long, conflicts_with_all = ["secret_file", "framing", "count"])]
    udp: bool,
    #[command(flatten)]
    auth: AuthArgs,
    /// Send each line as a frame and print the body of the reply frame.
    #[arg(long)]
    framed: bool,
    /// Classic frame format: little-endian i32 header length, body size in `filesize`.
    #[arg(long, requires = "framing")]
    classic: bool,
    /// Upload FILE in one `put` frame (with its md5) and print the server's reply.
    #[arg(long, value_name = "FILE")]
    put: Option<PathBuf>,
    /// Load generator: send N messages in total over TCP, each waiting for its full echo,
    /// then print latency percentiles and throughput.
    #[arg(long, value_name = "N", conflicts_with = "framing",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Bytes per load-generator message.
    #[arg(long, value_name = "B", default_value_t = 64, requires = "count",
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    size: u32,
    /// Load-generator connections, each sending its share of the messages in turn.
    #[arg(long, value_name = "C", default_value_t = 8, requires = "count",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
}

/// Runs an echo subcommand.
pub fn run(cmd: EchoCommand) -> anyhow::Result<()> {
    match cmd {
        EchoCommand::Serve(args) => serve(args),
        EchoCommand::Send(args) => send(args),
    }
}

/// The key and algorithm from the flags, or `None` without --secret-file.
fn resolve_auth(args: &AuthArgs) -> anyhow::Result<Option<Auth>> {
    let Some(path) = &args.secret_file else {
        return Ok(None);
    };
    Ok(Some(Auth {
        key: read_secret(path)?,
        algorithm: if args.md5 {
            Algorithm::Md5
        } else {
            Algorithm::Sha256
        },
        mutual: args.mutual,
    }))
}

/// The key in `path`, without the trailing newline editors and `echo` add.
fn read_secret(path: &Path) -> anyhow::Result<Key> {
    let mut bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        bail!("the secret file {} is empty", path.display());
    }
    Ok(Key::new(bytes))
}

fn format(classic: bool) -> Format {
    if classic {
        Format::Classic
    } else {
        Format::Standard
    }
}

/// What `ferry echo serve` will run, resolved from the flags.
#[derive(Debug)]
struct ServePlan {
    /// The TCP address and service, unless only UDP is served.
    tcp: Option<(SocketAddr, Config)>,
    /// The UDP address and mode, if UDP is served.
    udp: Option<(SocketAddr, Mode)>,
    /// Created before serving, so the first upload does not fail on a missing directory.
    upload_dir: Option<PathBuf>,
}

fn resolve_serve(args: ServeArgs) -> anyhow::Result<ServePlan> {
    let mode = args.mode.map_or(Mode::Echo, Mode::from);
    let tcp = match (args.tcp, args.udp) {
        (Some(addr), _) => Some(addr),
        (None, None) => Some(DEFAULT_TCP.parse()?),
        (None, Some(_)) => None,
    };
    let tcp_only = args.framed || args.auth.secret_file.is_some();
    if tcp.is_none() && tcp_only {
        bail!("--framed and --secret-file apply to TCP, which is not served: add --tcp ADDR");
    }
    let upload_dir = args.dir.clone();
    let service = if args.framed {
        let mut framing = Framing::new(format(args.classic));
        framing.upload_dir = args.dir;
        Service::Framed(framing)
    } else {
        Service::Raw(mode)
    };
    let mut config = Config::new(service);
    config.auth = resolve_auth(&args.auth)?;
    config.handshake_timeout = HANDSHAKE_WAIT;
    Ok(ServePlan {
        tcp: tcp.map(|addr| (addr, config)),
        udp: args.udp.map(|addr| (addr, mode)),
        upload_dir,
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    crate::init_logging();
    let plan = resolve_serve(args)?;
    if let Some(dir) = &plan.upload_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the upload directory {}", dir.display()))?;
    }
    runtime()?.block_on(serve_async(plan))
}

async fn serve_async(plan: ServePlan) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let tcp = match plan.tcp {
        Some((addr, config)) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on TCP {addr}"))?;
            println!("ferry echo serving TCP on {}", listener.local_addr()?);
            Some((listener, config))
        }
        None => None,
    };
    let udp = match plan.udp {
        Some((addr, mode)) => {
            let socket = UdpSocket::bind(addr)
                .await
                .with_context(|| format!("cannot listen on UDP {addr}"))?;
            println!("ferry echo serving UDP on {}", socket.local_addr()?);
            Some((socket, mode))
        }
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let tcp = async {
        match tcp {
            Some((listener, config)) => {
                tcp::run(listener, config, until_stopped(stopped.clone())).await
            }
            None => Ok(()),
        }
    };
    let udp = async {
        match udp {
            Some((socket, mode)) => udp::run(socket, mode, until_stopped(stopped.clone())).await,
            None => Ok(()),
        }
    };
    let signal = async {
        shutdown.await;
        let _ = stop.send(true);
    };
    let ((), tcp, udp) = tokio::join!(signal, tcp, udp);
    tcp?;
    udp?;
    info!("echo: stopped");
    Ok(())
}

/// Watches Ctrl-C and SIGTERM from now on, so a signal sent right after the addresses are
/// announced stops the server gracefully instead of killing it; the future completes on
/// either.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch Ctrl-C")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => info!("Ctrl-C received"),
            _ = term.recv() => info!("SIGTERM received"),
        }
    })
}

fn send(args: SendArgs) -> anyhow::Result<()> {
    let auth = resolve_auth(&args.auth)?;
    runtime()?.block_on(async {
        let addr = resolve_addr(&args.addr).await?;
        if let Some(count) = args.count {
            let load = Load {
                count,
                size: args.size as usize,
                concurrency: args.concurrency,
            };
            return load.run(addr, auth.as_ref()).await;
        }
        if args.udp {
            return chat_udp(addr).await;
        }
        let stream = client::connect(addr, auth.as_ref(), HANDSHAKE_WAIT)
            .await
            .with_context(|| format!("cannot open a session with {addr}"))?;
        if !args.framed && args.put.is_none() {
            return chat_tcp(stream, auth.is_some()).await;
        }
        let client = FramedClient::new(stream, format(args.classic));
        let result = match &args.put {
            Some(file) => put(client, file).await,
            None => chat_framed(client).await,
        };
        result.map_err(|err| explain(err, auth.is_some()))
    })
}

/// Adds the likely cause to a framed session's failure.
fn explain(err: anyhow::Error, authenticated: bool) -> anyhow::Error {
    match err.downcast_ref::<EchoError>() {
        Some(echo) if echo.is_disconnect() && authenticated => {
            err.context("the server hung up (was the key refused?)")
        }
        Some(EchoError::Frame(_)) => {
            err.context("bad reply frame (do both sides agree on --classic?)")
        }
        _ => err,
    }
}

async fn resolve_addr(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve {addr:?} (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("{addr:?} has no address"))
}

/// Lines typed or piped in, minus empty ones, until EOF or a quit word.
struct Messages {
    /// Standard input, line by line.
    lines: tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    /// Prompt only when a person types; a pipe gets clean output.
    prompt: bool,
}

impl Messages {
    fn stdin() -> Self {
        Messages {
            lines: BufReader::new(tokio::io::stdin()).lines(),
            prompt: std::io::stdin().is_terminal(),
        }
    }

    async fn next(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if self.prompt {
                eprint!("> ");
            }
            let Some(line) = self.lines.next_line().await.context("cannot read stdin")? else {
                return Ok(None);
            };
            match line.trim() {
                "" => continue,
                "q" | "quit" | "exit" => return Ok(None),
                _ => return Ok(Some(line)),
            }
        }
    }
}

/// Prints a reply as a line (its own trailing newline, if any, is not doubled).
fn print_reply(reply: &[u8]) {
    let text = String::from_utf8_lossy(reply);
    println!(
        "{}",
        text.strip_suffix('\n')
            .unwrap_or(&text)
            .trim_end_matches('\r')
    );
}

async fn chat_tcp(mut stream: TcpStream, authenticated: bool) -> anyhow::Result<()> {
    let closed = || {
        if authenticated {
            anyhow::anyhow!("the server closed the connection (was the key refused?)")
        } else {
            anyhow::anyhow!("the server closed the connection")
        }
    };
    let mut buf = vec![0; 64 * 1024];
    // A greeting server speaks first; anything else stays silent until we send.
    let greeted = match timeout(GREETING_WAIT, stream.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(0)) => return Err(closed()),
        Ok(Ok(n)) if n == CHALLENGE_LEN && std::str::from_utf8(&buf[..n]).is_err() => {
            bail!(
                "the server sent a 32-byte binary challenge: it wants a handshake (--secret-file)"
            )
        }
        Ok(Ok(n)) => {
            print_reply(&buf[..n]);
            true
        }
        Ok(Err(err)) => return Err(err).context("cannot read from the server"),
    };
    let mut messages = Messages::stdin();
    while let Some(line) = messages.next().await? {
        stream
            .write_all(line.as_bytes())
            .await
            .context("cannot send")?;
        match read_reply(&mut stream, &mut buf, line.len()).await? {
            Some(reply) => print_reply(&reply),
            None => return Err(closed()),
        }
    }
    // The greeting protocol's goodbye; the server closes on it.
    if greeted {
        let _ = stream.write_all(EXIT).await;
    }
    Ok(())
}

/// One reply to a message of `sent` bytes: at least that long unless the server pauses, plus
/// whatever follows without a pause. `None` when the server closed the connection.
async fn read_reply(
    stream: &mut TcpStream,
    buf: &mut [u8],
    sent: usize,
) -> anyhow::Result<Option<Vec<u8>>> {
    let n = timeout(REPLY_WAIT, stream.read(buf))
        .await
        .with_context(|| format!("no reply within {REPLY_WAIT:?}"))?
        .context("cannot read the reply")?;
    if n == 0 {
        return Ok(None);
    }
    let mut reply = buf[..n].to_vec();
    loop {
        let wait = if reply.len() < sent {
            REPLY_WAIT / 20
        } else {
            REPLY_QUIET
        };
        match timeout(wait, stream.read(buf)).await {
            Ok(Ok(n)) if n > 0 => reply.extend_from_slice(&buf[..n]),
            _ => return Ok(Some(reply)),
        }
    }
}

async fn chat_udp(addr: SocketAddr) -> anyhow::Result<()> {
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .context("cannot open a UDP socket")?;
    // Connected: only answers from the server get through, and refusals are reported.
    socket.connect(addr).await?;
    let mut buf = vec![0; 65_535];
    let mut messages = Messages::stdin();
    while let Some(line) = messages.next().await? {
        socket.send(line.as_bytes()).await.context("cannot send")?;
        match timeout(UDP_WAIT, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => print_reply(&buf[..n]),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                bail!("nothing answers on UDP {addr} (connection refused)")
            }
            Ok(Err(err)) => return Err(err).context("cannot receive"),
            Err(_) => eprintln!(
                "ferry: no answer from {addr} within {UDP_WAIT:?} (UDP may lose datagrams)"
            ),
        }
    }
    Ok(())
}

async fn chat_framed(mut client: FramedClient) -> anyhow::Result<()> {
    let mut messages = Messages::stdin();
    while let Some(line) = messages.next().await? {
        let reply = client.request(service::message_frame(line)).await?;
        if reply.str_field("status") == Some("error") {
            bail!(
                "the server answered: {}",
                reply.str_field("message").unwrap_or("error")
            );
        }
        print_reply(&reply.body);
    }
    Ok(())
}

async fn put(mut client: FramedClient, file: &Path) -> anyhow::Result<()> {
    let name = file
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("{} has no UTF-8 file name", file.display()))?;
    let body = tokio::fs::read(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let reply = client
        .request(service::upload::put_frame(name, body))
        .await?;
    println!("{}", reply.header_json());
    if reply.str_field("status") != Some("ok") {
        bail!(
            "upload refused: {}",
            reply.str_field("message").unwrap_or("no reason given")
        );
    }
    Ok(())
}

/// A load test: `count` echoes of `size` bytes over `concurrency` connections.
#[derive(Debug)]
struct Load {
    /// Messages in total, shared out among the connections.
    count: u64,
    /// Bytes per message.
    size: usize,
    /// Connections, each with one message in flight at a time.
    concurrency: u32,
}

impl Load {
    async fn run(&self, addr: SocketAddr, auth: Option<&Auth>) -> anyhow::Result<()> {
        let connections = u64::from(self.concurrency).min(self.count);
        // Connect (and authenticate) first, so the figures measure echoes only.
        let mut streams = Vec::new();
        for _ in 0..connections {
            let stream = client::connect(addr, auth, HANDSHAKE_WAIT)
                .await
                .with_context(|| format!("cannot connect to {addr}"))?;
            streams.push(stream);
        }
        let start = Instant::now();
        let workers: Vec<_> = streams
            .into_iter()
            .zip(0..)
            .map(|(stream, i)| {
                let share = self.count / connections + u64::from(i < self.count % connections);
                tokio::spawn(echo_many(stream, share, self.size))
            })
            .collect();
        let mut latencies = Vec::with_capacity(self.count as usize);
        for worker in workers {
            latencies.extend(worker.await.context("a load worker panicked")??);
        }
        let elapsed = start.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let ms = |p: f64| percentile(&latencies, p).as_secs_f64() * 1e3;
        println!(
            "{} messages of {} bytes over {connections} connection{} in {elapsed:.3} s",
            self.count,
            self.size,
            if connections == 1 { "" } else { "s" }
        );
        println!(
            "latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(0.50),
            ms(0.90),
            ms(0.99),
            ms(1.0)
        );
        println!(
            "throughput {:.0} messages/s, {:.2} MB/s each way",
            self.count as f64 / elapsed,
            (self.count as f64 * self.size as f64) / elapsed / 1e6
        );
        Ok(())
    }
}

/// Sends `count` messages one after another, each after the previous one fully came back;
/// returns each round trip.
async fn echo_many(
    mut stream: TcpStream,
    count: u64,
    size: usize,
) -> anyhow::Result<Vec<Duration>> {
    let message: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut echo = vec![0; size];
    let mut latencies = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let sent = Instant::now();
        stream.write_all(&message).await.context("cannot send")?;
        stream
            .read_exact(&mut echo)
            .await
            .context("the echo did not come back in full")?;
        latencies.push(sent.elapsed());
        if echo != message {
            bail!("the reply differs from the message (is the server in echo mode?)");
        }
    }
    Ok(latencies)
}

/// The `p` quantile (0 < p <= 1) of sorted values, by the nearest-rank method.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&values, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&values, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&values[..1], 0.9), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn a_secret_file_loses_one_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        for (content, key) in [("k\n", "k"), ("k\r\n", "k"), ("k", "k"), ("k\n\n", "k\n")] {
            std::fs::write(&path, content).unwrap();
            let expected = ferry_net::handshake::answer(&Key::new(key), Algorithm::Md5, b"c");
            let got =
                ferry_net::handshake::answer(&read_secret(&path).unwrap(), Algorithm::Md5, b"c");
            assert_eq!(got, expected, "{content:?}");
        }
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret(&path).is_err());
    }
}
