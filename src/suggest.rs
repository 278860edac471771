//! "Did you mean": the nearest known name to a misspelt one, for lint and runtime errors.

/// The edits that turn `a` into `b`: insertions, deletions, substitutions, and swaps of two
/// neighbours ("dsn" for "dns" is one).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: the one before the previous is what a swap of neighbours reaches back to.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 0..a.len() {
        let mut cur = vec![i + 1; b.len() + 1];
        for j in 0..b.len() {
            cur[j + 1] = (prev[j] + usize::from(a[i] != b[j]))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                cur[j + 1] = cur[j + 1].min(before[j - 1] + 1);
            }
        }
        before = std::mem::replace(&mut prev, cur);
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

/// " (did you mean `DIR/NAME`?)" for a file that is not there when its folder holds one of the
/// same extension with a close name (`emergency-failovr.rhai`, `prod.tmol`): the path as given,
/// with the name corrected, so that it can be pasted.
pub fn nearby_file(path: &std::path::Path) -> String {
    if path.exists() {
        return String::new();
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return String::new();
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let listed = std::fs::read_dir(dir.unwrap_or(std::path::Path::new(".")));
    let names: Vec<String> = listed
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    closest(name, names.iter().map(String::as_str))
        .map(|c| match dir {
            Some(d) => format!(" (did you mean `{}`?)", d.join(c).display()),
            None => format!(" (did you mean `{c}`?)"),
        })
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
        assert_eq!(edit_distance("dsn", "dns"), 1);
        assert_eq!(edit_distance("regoins", "regions"), 1);
        assert_eq!(edit_distance("base", "name"), 2);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(suggest("querry", ["query"]), " (did you mean `query`?)");
        assert_eq!(suggest("zzz", ["query"]), "");
    }

    #[test]
    fn a_misspelt_file_is_named_as_it_is_in_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["emergency-failover.rhai", "status.rhai", "prod.toml"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let at = |name: &str| dir.path().join(name);
        for (given, meant) in [
            ("emergency-failovr.rhai", Some("emergency-failover.rhai")),
            ("statsu.rhai", Some("status.rhai")),
            ("prod.tmol", Some("prod.toml")),
            ("staging.toml", None),
            // There: nothing to suggest.
            ("status.rhai", None),
        ] {
            let said = nearby_file(&at(given));
            let want = meant
                .map(|m| format!(" (did you mean `{}`?)", at(m).display()))
                .unwrap_or_default();
            assert_eq!(said, want, "{given}");
        }
    }
}
