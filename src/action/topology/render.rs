//! The topology as a person reads it at 3 a.m.: a table, a region a row, then what is wrong.

use super::model::{Cache, Database, Health, Region, Topology};
use super::rules::current_primary;
use crate::action::pg::human_bytes;

fn database(db: &Database) -> String {
    match db.role.as_str() {
        "primary" => format!(
            "primary{} tl {} at {}",
            if db.writable { "" } else { " READ-ONLY" },
            db.timeline.unwrap_or(0),
            db.current_lsn.as_deref().unwrap_or("?")
        ),
        "standby" => {
            let from = db.source().unwrap_or_else(|| "?".into());
            let streaming = db.wal_receiver.as_deref() == Some("streaming");
            let lag = db
                .lag_bytes
                .map(|l| format!(", lag {}", human_bytes(l)))
                .unwrap_or_default();
            if streaming {
                format!("standby <- {from} tl {}{lag}", db.timeline.unwrap_or(0))
            } else {
                format!(
                    "standby NOT STREAMING (from {from}) tl {}",
                    db.timeline.unwrap_or(0)
                )
            }
        }
        "unreachable" => match (&db.stopped_state, &db.wal_end_lsn) {
            (Some(state), Some(end)) => format!("DOWN ({state}, WAL ends {end})"),
            (Some(state), None) => format!("DOWN ({state})"),
            _ => "UNREACHABLE".into(),
        },
        "refused" => "REFUSED (answers; role unknown)".into(),
        _ => "-".into(),
    }
}

fn cache(c: &Cache) -> String {
    match c.role.as_str() {
        "master" => "primary".into(),
        "replica" => format!(
            "replica <- {} ({})",
            c.master_region
                .clone()
                .or_else(|| c.master.clone())
                .unwrap_or_default(),
            c.link.as_deref().unwrap_or("?")
        ),
        "unreachable" => "UNREACHABLE".into(),
        "refused" => "REFUSED (answers)".into(),
        _ => "-".into(),
    }
}

fn health(h: &Health) -> String {
    if !h.checked {
        return "-".into();
    }
    match (h.ok, h.status, h.latency_ms) {
        (true, _, Some(ms)) => format!("ok {ms} ms"),
        (false, Some(s), Some(ms)) => format!("FAIL {s} in {ms} ms"),
        _ => "FAIL no answer".into(),
    }
}

fn app(r: &Region) -> String {
    let a = &r.app;
    if !a.checked {
        return "-".into();
    }
    if !a.reachable {
        return "UNREADABLE".into();
    }
    let db = a
        .database_region
        .clone()
        .or_else(|| a.database_url.as_ref().map(|_| "?".into()))
        .unwrap_or_else(|| "-".into());
    format!("{}/{} -> {db}", a.ready, a.replicas)
}

/// The table and the anomalies, ready to print.
pub fn table(t: &Topology) -> String {
    let header = [
        "REGION",
        "DATABASE",
        "REDIS",
        "HEALTH",
        "APP (ready -> db)",
        "DNS",
    ];
    let mut rows: Vec<[String; 6]> = vec![header.map(str::to_string)];
    for (name, r) in &t.regions {
        rows.push([
            name.clone(),
            database(&r.database),
            cache(&r.redis),
            health(&r.health),
            app(r),
            r.dns_weight
                .map(|w| w.to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let primary = match (t.primary.as_deref(), current_primary(t)) {
        (Some(p), _) => format!("primary: {p}"),
        (None, Some(p)) => format!("primary: {p} (newest of {})", t.writable.join(", ")),
        (None, None) if t.writable.len() > 1 => {
            format!(
                "primary: AMBIGUOUS ({} all writable)",
                t.writable.join(", ")
            )
        }
        (None, None) => match t.with_database("refused").as_slice() {
            [] => "primary: NONE (no database accepts writes)".into(),
            names => format!(
                "primary: UNKNOWN (none is seen taking writes; {} refuse{} the engine)",
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if names.len() == 1 { "s" } else { "" }
            ),
        },
    };
    let inventory = match (&t.inventory_primary, current_primary(t)) {
        (Some(i), Some(p)) if i != p => format!("; the inventory says {i}"),
        _ => String::new(),
    };
    out.push_str(&format!("{primary}{inventory}\n"));
    if t.anomalies.is_empty() {
        out.push_str("no anomalies\n");
    } else {
        for a in &t.anomalies {
            out.push_str(&format!("{:<8}  {}\n", a.severity.label(), a.message));
            if let Some(fix) = &a.fix {
                out.push_str(&format!("{:<8}  next: {fix}\n", ""));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::model::{Anomaly, Database, Region, Severity, Topology};
    use super::table;

    #[test]
    fn the_table_shows_each_region_then_what_is_wrong() {
        let db = |role: &str, writable: bool, upstream: Option<&str>| Database {
            reachable: role != "unreachable",
            role: role.into(),
            writable,
            timeline: Some(2),
            current_lsn: writable.then(|| "0/5000060".into()),
            replay_lsn: upstream.map(|_| "0/5000060".into()),
            wal_receiver: upstream.map(|_| "streaming".into()),
            upstream_region: upstream.map(str::to_string),
            lag_bytes: upstream.map(|_| 0),
            ..Default::default()
        };
        let mut t = Topology {
            primary: Some("eu".into()),
            writable: vec!["eu".into()],
            inventory_primary: Some("us".into()),
            ..Default::default()
        };
        t.regions.insert(
            "eu".into(),
            Region {
                database: db("primary", true, None),
                dns_weight: Some(100),
                ..Default::default()
            },
        );
        t.regions.insert(
            "us".into(),
            Region {
                database: db("standby", false, Some("eu")),
                dns_weight: Some(0),
                ..Default::default()
            },
        );
        t.anomalies.push(Anomaly {
            severity: Severity::Info,
            code: "inventory_disagrees".into(),
            region: None,
            message: "the inventory says us".into(),
            fix: Some("edit it".into()),
        });
        let text = table(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("REGION  DATABASE"), "{text}");
        assert!(
            lines[1].starts_with("eu      primary tl 2 at 0/5000060"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("us      standby <- eu tl 2, lag 0 B"),
            "{text}"
        );
        assert_eq!(lines[3], "primary: eu; the inventory says us");
        assert_eq!(lines[4], "INFO      the inventory says us");
        assert_eq!(lines[5], "          next: edit it");
    }
}
