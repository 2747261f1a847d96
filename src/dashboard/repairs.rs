//! The dashboard on a collector's `SQLite` database (`edgeprio dashboard
//! --db collected.db`): what its gap repair knows, per node, and which
//! collectors write it (README, "Repairs"). Read-only; reloaded like the
//! agent's view.
//!
//! Per node: the streams (sensor and log) the database holds, the seqs
//! missing and asked for, those still within the grace period (`waiting`:
//! usually batch readings on their way), those repaired and those
//! unrecoverable (the node said they are gone). Per collector: its route
//! and when it last scanned.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use rusqlite::{Connection, OpenFlags};

/// One node's repair state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRepairs {
    /// The node.
    pub node: String,
    /// Its streams (sensor, log) in the database.
    pub streams: u64,
    /// Seqs missing that have been asked for.
    pub missing: u64,
    /// Seqs missing not asked for yet (younger than the grace period).
    pub waiting: u64,
    /// Seqs that came after they were asked for.
    pub repaired: u64,
    /// Seqs the node said are gone.
    pub unrecoverable: u64,
}

/// A collector that writes the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its client id.
    pub client_id: String,
    /// Its route.
    pub route: String,
    /// When it last scanned (Unix ms).
    pub seen_ms: i64,
}

/// What the view shows, loaded at `at_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repairs {
    /// The database, for the title.
    pub path: String,
    /// When it was loaded (Unix ms).
    pub at_ms: i64,
    /// Per node, by name.
    pub nodes: Vec<NodeRepairs>,
    /// The collectors, by client id.
    pub members: Vec<Member>,
    /// Why the last reload failed, if it did.
    pub error: Option<String>,
}

/// Whether `path` is a collector database (its `application_id`).
pub fn is_collector_db(path: &std::path::Path) -> bool {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.pragma_query_value(None, "application_id", |r| r.get::<_, i32>(0)))
        .is_ok_and(|id| id == crate::collect::sqlite::APPLICATION_ID)
}

/// Opens a collector database read-only.
pub fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_millis(200))?;
    Ok(conn)
}

/// Reads the view from `conn` at `at_ms`. Cheap: the gap tables hold a
/// row per stream and per hole, never one per reading.
pub fn load(conn: &Connection, path: &str, at_ms: i64) -> rusqlite::Result<Repairs> {
    let mut nodes: std::collections::BTreeMap<String, NodeRepairs> =
        std::collections::BTreeMap::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT node, count(*), sum(repaired) FROM streams GROUP BY node ORDER BY node",
        )?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            let node: String = r.get(0)?;
            let n = nodes.entry(node.clone()).or_default();
            n.node = node;
            n.streams = u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0);
            n.repaired = u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0);
        }
    }
    {
        let mut stmt = conn.prepare_cached(
            "SELECT node,
                    coalesce(sum(last_seq - first_seq + 1)
                        FILTER (WHERE gone_ms IS NULL AND asks > 0), 0),
                    coalesce(sum(last_seq - first_seq + 1)
                        FILTER (WHERE gone_ms IS NULL AND asks = 0), 0),
                    coalesce(sum(last_seq - first_seq + 1) FILTER (WHERE gone_ms IS NOT NULL), 0)
             FROM gaps GROUP BY node",
        )?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            let node: String = r.get(0)?;
            let n = nodes.entry(node.clone()).or_default();
            n.node = node;
            let count = |i| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
            n.missing = count(1)?;
            n.waiting = count(2)?;
            n.unrecoverable = count(3)?;
        }
    }
    let members = conn
        .prepare_cached("SELECT client_id, route, seen_ms FROM collectors ORDER BY client_id")?
        .query_map([], |r| {
            Ok(Member {
                client_id: r.get(0)?,
                route: r.get(1)?,
                seen_ms: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Repairs {
        path: path.to_owned(),
        at_ms,
        nodes: nodes.into_values().collect(),
        members,
        error: None,
    })
}

/// "12 s ago", "3 min ago", "2 h ago".
fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..120 => format!("{s} s ago"),
        120..7_200 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// Draws the view.
pub fn render(frame: &mut Frame, r: &Repairs) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let [header, nodes, members] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(5),
        Constraint::Length(u16::try_from(r.members.len().min(8)).unwrap_or(8) + 3),
    ])
    .areas(frame.area());
    let (missing, unrecoverable): (u64, u64) = r
        .nodes
        .iter()
        .fold((0, 0), |(m, u), n| (m + n.missing, u + n.unrecoverable));
    let status = r.error.clone().unwrap_or_else(|| {
        let nodes = match r.nodes.len() {
            1 => "1 node".to_owned(),
            n => format!("{n} nodes"),
        };
        format!("{nodes}, {missing} readings missing, {unrecoverable} unrecoverable   q: quit")
    });
    frame.render_widget(
        Paragraph::new(Line::from(status)).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" edgeprio collector database {} ", r.path)),
        ),
        header,
    );
    let rows = r.nodes.iter().map(|n| {
        Row::new([
            n.node.clone(),
            n.streams.to_string(),
            n.missing.to_string(),
            n.waiting.to_string(),
            n.repaired.to_string(),
            n.unrecoverable.to_string(),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Min(12),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(14),
            ],
        )
        .header(
            Row::new([
                "node",
                "streams",
                "missing",
                "waiting",
                "repaired",
                "unrecoverable",
            ])
            .style(bold),
        )
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" repairs per node "),
        ),
        nodes,
    );
    let rows = r.members.iter().map(|m| {
        Row::new([
            m.client_id.clone(),
            m.route.clone(),
            ago(r.at_ms - m.seen_ms),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Min(20),
                Constraint::Length(9),
                Constraint::Length(12),
            ],
        )
        .header(Row::new(["collector", "route", "last scan"]).style(bold))
        .block(Block::default().borders(Borders::ALL).title(" collectors ")),
        members,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::collect::gaps::RepairPolicy;
    use crate::collect::{Member as CollectMember, Sink, SqliteSink};
    use crate::domain::{LogId, PerChannel, Reading, Received, ResendReply, Route, Sample};

    const NOW: i64 = 1_795_569_958_654;

    fn received(node: &str, seq: u64) -> Received {
        Received {
            reading: Reading {
                node: node.into(),
                sensor: "lab".into(),
                seq,
                ts_ms: NOW,
                sample: Sample::new(21.0, 50.0),
                weights: PerChannel {
                    temperature: 0,
                    humidity: 0,
                },
                priority: 0,
                route: Route::Batch,
                clock_synced: None,
            },
            log: LogId::new(0x3f9c_2a71_d04b_e815),
            late: false,
            resent: false,
        }
    }

    /// A collector database written by the real sink: node "pi" lost seqs
    /// 3..=9 (asked for), 5..=6 came back, 8..=9 are gone; node "esp"
    /// has a young hole.
    async fn database(path: &std::path::Path) {
        let mut sink = SqliteSink::open(path).await.expect("a collector database");
        let policy = RepairPolicy::after(std::time::Duration::from_mins(1));
        for (route, id) in [(Route::Realtime, "c-rt"), (Route::Batch, "c-b")] {
            let me = CollectMember {
                client_id: id.into(),
                route,
            };
            sink.repair(NOW - 120_000, policy, &me).await.expect("scan");
        }
        let mut first: Vec<Received> = [0, 1, 2, 10].iter().map(|&s| received("pi", s)).collect();
        first.extend([0, 1].iter().map(|&s| received("esp", s)));
        sink.store(&first, NOW - 120_000).await.expect("store");
        let me = CollectMember {
            client_id: "c-b".into(),
            route: Route::Batch,
        };
        let r = sink.repair(NOW - 120_000, policy, &me).await.expect("scan");
        assert!(r.asks.is_empty());
        let r = sink.repair(NOW - 30_000, policy, &me).await.expect("scan");
        assert_eq!(r.asks.len(), 1, "{r:?}");
        sink.store(
            &[received("pi", 5), received("pi", 6), received("esp", 5)],
            NOW - 20_000,
        )
        .await
        .expect("store");
        let reply = ResendReply {
            sensor: "lab".into(),
            log: LogId::new(0x3f9c_2a71_d04b_e815),
            from: 3,
            to: 9,
            resent: 2,
            gone: vec![[8, 9]],
            pending: vec![],
        };
        sink.answer("pi", &reply, NOW - 10_000)
            .await
            .expect("answer");
        sink.repair(NOW - 10_000, policy, &me).await.expect("scan");
    }

    #[tokio::test]
    async fn a_collector_database_shows_its_repairs_per_node() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("collected.db");
        database(&path).await;
        assert!(is_collector_db(&path));
        let r = load(&open(&path).expect("opens"), "collected.db", NOW).expect("loads");
        assert_eq!(
            r.nodes,
            vec![
                NodeRepairs {
                    node: "esp".into(),
                    streams: 1,
                    missing: 0,
                    waiting: 3,
                    repaired: 0,
                    unrecoverable: 0,
                },
                NodeRepairs {
                    node: "pi".into(),
                    streams: 1,
                    missing: 3,
                    waiting: 0,
                    repaired: 2,
                    unrecoverable: 2,
                },
            ]
        );
        assert_eq!(r.members.len(), 2);
        let mut terminal = Terminal::new(TestBackend::new(80, 20)).expect("test terminal");
        terminal.draw(|f| render(f, &r)).expect("draws");
        insta::assert_snapshot!("repairs_80x20", terminal.backend());
    }

    #[test]
    fn an_agents_log_is_not_a_collector_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("e.db");
        drop(crate::store::Store::open(&path, crate::store::Access::Writer).expect("a log"));
        assert!(!is_collector_db(&path));
    }
}
