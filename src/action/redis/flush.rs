//! Emptying a cache: flush.

use super::*;

/// What a flush removed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Flushed {
    /// Keys the database held when it was emptied (0: it already was empty).
    pub removed: i64,
    /// False when there was nothing to remove.
    pub changed: bool,
}

/// The database a connection to `url` selects, as the client library reads the URL (db 0
/// unless its path names one); None when the URL cannot be read here (a secret not set, as in
/// an offline dry-run) or is not a Redis URL.
fn db_of(url: &SecretString) -> Option<i64> {
    use redis::IntoConnectionInfo;
    let raw = url.reveal().ok()?;
    let parts = split_url(&raw).ok()?;
    let info = parts.rest.as_str().into_connection_info().ok()?;
    Some(info.redis_settings().db())
}

action! {
    /// Empty the database the URL names (FLUSHDB ASYNC; db 0 unless the URL ends in /N) on a
    /// primary, so that a cache holds nothing of data that was replaced; its replicas follow.
    /// Refused on a replica. On a Redis Cluster it empties the one node.
    Flush(Target) -> Flushed = Spec::converge("redis", "flush").primary("url").timeout(30)
}

impl Action for Flush {
    fn describe(input: &Target) -> String {
        let db = db_of(&input.url).map_or_else(
            || "the database its URL names".to_string(),
            |n| format!("db {n}"),
        );
        format!("empty {db} on {}", target(&input.url, &input.name))
    }

    fn predict(_: &Target) -> Flushed {
        Flushed {
            removed: 0,
            changed: true,
        }
    }

    async fn preview(input: Target, cx: Cx) -> Option<String> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await.ok()?;
        let role = role_of(&mut conn, &target).await.ok()?;
        if role.role != "master" {
            return Some(role_summary(&role));
        }
        let keys = query(&mut conn, &target, &["DBSIZE"]).await.ok()?;
        Some(format!("now {} key(s)", text(&keys)))
    }

    async fn run(input: Target, cx: Cx) -> Result<Flushed, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let role = role_of(&mut conn, &target).await?;
        if role.role != "master" {
            return Err(ActionError::permanent(format!(
                "{target} is a replica of {}: empty its primary instead, and the replicas follow it",
                role.primary.as_deref().unwrap_or("?")
            )));
        }
        // The count and the flush in one transaction: nothing written between them is
        // removed uncounted.
        let (removed, _): (i64, redis::Value) = redis::pipe()
            .atomic()
            .cmd("DBSIZE")
            .cmd("FLUSHDB")
            .arg("ASYNC")
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(&target, e, true))?;
        Ok(Flushed {
            removed,
            changed: removed > 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_the_urls_path() {
        for (url, db) in [
            ("redis://127.0.0.1:6379", 0),
            ("redis://127.0.0.1:6379/", 0),
            ("redis://:pw@127.0.0.1:6379/3", 3),
            ("rediss://h:6380/2?cacert=/ca.pem", 2),
            ("rediss://h:6379/1#insecure", 1),
        ] {
            assert_eq!(db_of(&SecretString::Plain(url.into())), Some(db), "{url}");
        }
        // Not a database number: the client would refuse it, so no number is claimed.
        assert_eq!(db_of(&SecretString::Plain("redis://h:6379/x".into())), None);
    }
}
