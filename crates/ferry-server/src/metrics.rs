//! Prometheus metrics: counters kept with atomics (every labelled series a command can touch
//! is created once, so the hot path takes no lock), encoded in the text format by
//! `prometheus-client` when `GET /metrics` is scraped over a small hyper server.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The lowest and highest FTP reply codes; one counter each, created when first sent.
const REPLY_CODES: std::ops::RangeInclusive<u16> = 100..=599;

/// A scrape that has not sent its request line and headers after this is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which way a file went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// RETR.
    Download,
    /// STOR, APPE, STOU.
    Upload,
}

/// How a file transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 226.
    Complete,
    /// The data connection, the storage or the quota failed it.
    Failed,
    /// The client sent ABOR or went away.
    Aborted,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransferLabels {
    direction: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

/// One server's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// What a scrape encodes.
    registry: Registry,
    /// Control connections being served now.
    sessions_open: Gauge,
    /// Control connections served since start.
    sessions: Counter,
    /// Successful logins.
    logins_ok: Counter,
    /// Refused logins (wrong name or password, blocked address, TLS required).
    logins_failed: Counter,
    /// File bytes received by completed uploads.
    bytes_in: Counter,
    /// File bytes sent by completed downloads.
    bytes_out: Counter,
    /// File transfers, indexed by [`Metrics::transfer_index`].
    transfers: [Counter; 6],
    /// How long file transfers took, downloads then uploads.
    durations: [Histogram; 2],
    /// Uploads and creations refused with 552 for lack of quota.
    quota_rejections: Counter,
    /// Replies sent, by code.
    replies: Family<CodeLabel, Counter>,
    /// Each code's counter once it has been sent: afterwards a reply costs an atomic add.
    reply_counters: Box<[OnceLock<Counter>]>,
    /// 1 while the server drains (out of rotation, waiting for sessions to end).
    draining: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under `ferry_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let sessions_open = Gauge::default();
        registry.register(
            "sessions_open",
            "Control connections being served",
            sessions_open.clone(),
        );
        let sessions = Counter::default();
        registry.register(
            "sessions",
            "Control connections served since start",
            sessions.clone(),
        );
        let logins = Family::<OutcomeLabel, Counter>::default();
        registry.register("logins", "Login attempts by outcome", logins.clone());
        let login = |outcome| logins.get_or_create_owned(&OutcomeLabel { outcome });
        let (logins_ok, logins_failed) = (login("ok"), login("failed"));
        let bytes_in = Counter::default();
        registry.register(
            "received_bytes",
            "File bytes received by completed uploads",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "sent_bytes",
            "File bytes sent by completed downloads",
            bytes_out.clone(),
        );
        let transfers = Family::<TransferLabels, Counter>::default();
        registry.register(
            "transfers",
            "File transfers by direction and outcome",
            transfers.clone(),
        );
        let transfer = |index: usize| {
            let (direction, outcome) = Self::transfer_labels(index);
            transfers.get_or_create_owned(&TransferLabels { direction, outcome })
        };
        let durations = Family::<DirectionLabel, Histogram>::new_with_constructor(|| {
            // 1 ms to about 4.6 hours, each bucket 4 times the last.
            Histogram::new(exponential_buckets(0.001, 4.0, 12))
        });
        registry.register(
            "transfer_duration_seconds",
            "How long file transfers took, from the 150 reply to the final one",
            durations.clone(),
        );
        let duration = |direction| durations.get_or_create_owned(&DirectionLabel { direction });
        let quota_rejections = Counter::default();
        registry.register(
            "quota_rejections",
            "Uploads refused with 552 for lack of quota",
            quota_rejections.clone(),
        );
        let replies = Family::<CodeLabel, Counter>::default();
        registry.register("replies", "Replies sent, by code", replies.clone());
        let draining = Gauge::default();
        registry.register(
            "draining",
            "1 while the server drains: no new connections, waiting for sessions to end",
            draining.clone(),
        );
        Metrics {
            registry,
            sessions_open,
            sessions,
            logins_ok,
            logins_failed,
            bytes_in,
            bytes_out,
            transfers: std::array::from_fn(transfer),
            durations: [duration("download"), duration("upload")],
            quota_rejections,
            replies,
            reply_counters: REPLY_CODES.map(|_| OnceLock::new()).collect(),
            draining,
        }
    }

    fn transfer_index(direction: Direction, outcome: Outcome) -> usize {
        let d = match direction {
            Direction::Download => 0,
            Direction::Upload => 3,
        };
        d + match outcome {
            Outcome::Complete => 0,
            Outcome::Failed => 1,
            Outcome::Aborted => 2,
        }
    }

    fn transfer_labels(index: usize) -> (&'static str, &'static str) {
        let direction = if index < 3 { "download" } else { "upload" };
        let outcome = ["complete", "failed", "aborted"][index % 3];
        (direction, outcome)
    }

    /// A control connection was admitted.
    pub fn session_opened(&self) {
        self.sessions.inc();
        self.sessions_open.inc();
    }

    /// A control connection ended.
    pub fn session_closed(&self) {
        self.sessions_open.dec();
    }

    /// A login succeeded (`true`) or was refused.
    pub fn login(&self, ok: bool) {
        if ok {
            self.logins_ok.inc();
        } else {
            self.logins_failed.inc();
        }
    }

    /// A file transfer ended; `bytes` counts only for a complete one.
    pub fn transfer(&self, direction: Direction, outcome: Outcome, bytes: u64, took: Duration) {
        self.transfers[Self::transfer_index(direction, outcome)].inc();
        let (total, histogram) = match direction {
            Direction::Download => (&self.bytes_out, &self.durations[0]),
            Direction::Upload => (&self.bytes_in, &self.durations[1]),
        };
        if outcome == Outcome::Complete {
            total.inc_by(bytes);
        }
        histogram.observe(took.as_secs_f64());
    }

    /// An upload was refused for lack of quota.
    pub fn quota_rejected(&self) {
        self.quota_rejections.inc();
    }

    /// A reply with `code` is being sent.
    pub fn reply(&self, code: u16) {
        let Some(slot) = code
            .checked_sub(*REPLY_CODES.start())
            .and_then(|i| self.reply_counters.get(usize::from(i)))
        else {
            return;
        };
        slot.get_or_init(|| self.replies.get_or_create_owned(&CodeLabel { code }))
            .inc();
    }

    /// The server started (`true`) or stopped draining.
    pub fn set_draining(&self, draining: bool) {
        self.draining.set(i64::from(draining));
    }

    /// All metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            warn!(%err, "cannot encode metrics");
        }
        text
    }
}

/// Serves `GET /metrics` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                warn!(%err, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&metrics, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                served = connection => if let Err(err) = served {
                    debug!(%err, "metrics: connection failed");
                },
            }
        });
    }
}

fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET || request.uri().path() != "/metrics" {
        let mut response = Response::new(Full::new(Bytes::from_static(b"Not found\n")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample named exactly `series` (name and labels).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    }

    #[test]
    fn counters_show_up_under_their_labels() {
        let m = Metrics::new();
        m.session_opened();
        m.session_opened();
        m.session_closed();
        m.login(true);
        m.login(false);
        m.login(false);
        m.transfer(
            Direction::Upload,
            Outcome::Complete,
            100,
            Duration::from_millis(5),
        );
        m.transfer(Direction::Download, Outcome::Aborted, 7, Duration::ZERO);
        m.reply(530);
        m.reply(530);
        m.reply(226);
        m.reply(42);
        m.quota_rejected();
        m.set_draining(true);
        let text = m.encode();
        assert_eq!(sample(&text, "ferry_sessions_open"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "ferry_sessions_total"), Some(2.0));
        assert_eq!(
            sample(&text, "ferry_logins_total{outcome=\"ok\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "ferry_logins_total{outcome=\"failed\"}"),
            Some(2.0)
        );
        assert_eq!(sample(&text, "ferry_received_bytes_total"), Some(100.0));
        // An aborted download's bytes are not counted.
        assert_eq!(sample(&text, "ferry_sent_bytes_total"), Some(0.0));
        assert_eq!(
            sample(
                &text,
                "ferry_transfers_total{direction=\"upload\",outcome=\"complete\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "ferry_transfers_total{direction=\"download\",outcome=\"aborted\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "ferry_transfer_duration_seconds_count{direction=\"upload\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "ferry_replies_total{code=\"530\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "ferry_replies_total{code=\"226\"}"),
            Some(1.0)
        );
        assert!(!text.contains("code=\"42\""), "{text}");
        assert_eq!(sample(&text, "ferry_quota_rejections_total"), Some(1.0));
        assert_eq!(sample(&text, "ferry_draining"), Some(1.0));
    }
}
