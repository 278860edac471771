//! "Did you mean": the nearest known name to a misspelt one, for lint and runtime errors.

/// Levenshtein distance: the insertions, deletions and substitutions that turn `a` into `b`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word`, when one is close enough to be what was meant.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

/// " (did you mean `x`?)" when one candidate is close.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_close_name_is_suggested() {
        // (misspelt, candidates, suggested)
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            ("querry", &["query", "exec"], Some("query")),
            ("timout", &["url", "timeout", "retries"], Some("timeout")),
            ("dsn", &["dns", "regions"], Some("dns")),
            (
                "databse_url",
                &["database_url", "redis_url"],
                Some("database_url"),
            ),
            // Far from everything: nothing is guessed.
            ("zone", &["database_url", "redis_url"], None),
            ("x", &["abc"], None),
            ("anything", &[], None),
        ];
        for (word, candidates, want) in cases {
            assert_eq!(closest(word, candidates.iter().copied()), *want, "{word}");
        }
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(suggest("querry", ["query"]), " (did you mean `query`?)");
        assert_eq!(suggest("zzz", ["query"]), "");
    }
}
