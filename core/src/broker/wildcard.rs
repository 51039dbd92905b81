//! Wildcard topic subscriptions, in both production brokers' syntaxes.
//!
//! A `/topic/` destination is a list of words separated by `.`. In a
//! subscription, a word `*` matches exactly one word (ActiveMQ and RabbitMQ),
//! and a word `#` (RabbitMQ) or `>` (ActiveMQ) matches any number of words,
//! none included: `/topic/future.events.*` hears `future.events.commit`, and
//! `/topic/future.#` or `/topic/future.>` hears everything under `future`.
//! Other destinations (queues, `/exchange/…`, plain names) match exactly.

/// Where topic destinations begin.
const TOPIC: &str = "/topic/";

/// Most words a pattern or destination is matched over (longer ones never match a pattern).
const MAX_WORDS: usize = 64;

/// A parsed wildcard subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    words: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    /// This word, literally.
    Exact(String),
    /// Any one word.
    One,
    /// Any number of words, zero included.
    Any,
}

impl Pattern {
    /// The pattern a subscription destination stands for; `None` when it has no
    /// wildcard word (it then matches only itself) or is not a topic.
    pub fn parse(destination: &str) -> Option<Pattern> {
        let name = destination.strip_prefix(TOPIC)?;
        let words: Vec<Word> = name
            .split('.')
            .map(|w| match w {
                "*" => Word::One,
                "#" | ">" => Word::Any,
                w => Word::Exact(w.to_owned()),
            })
            .collect();
        let wild = words.iter().any(|w| !matches!(w, Word::Exact(_)));
        (wild && words.len() <= MAX_WORDS).then_some(Pattern { words })
    }

    /// Whether a message sent to `destination` reaches this subscription.
    pub fn matches(&self, destination: &str) -> bool {
        let Some(name) = destination.strip_prefix(TOPIC) else {
            return false;
        };
        let words: Vec<&str> = name.splitn(MAX_WORDS + 1, '.').collect();
        words.len() <= MAX_WORDS && match_words(&self.words, &words)
    }
}

/// Matches without backtracking blow-up: at most `pattern × words` states.
fn match_words(pattern: &[Word], words: &[&str]) -> bool {
    // reach[j]: the pattern's first i words can consume the destination's first j words.
    let mut reach = vec![false; words.len() + 1];
    reach[0] = true;
    for p in pattern {
        let mut next = vec![false; words.len() + 1];
        for j in 0..=words.len() {
            match p {
                Word::Any => next[j] = reach[j] || (j > 0 && next[j - 1]),
                Word::One => next[j] = j > 0 && reach[j - 1],
                Word::Exact(w) => next[j] = j > 0 && reach[j - 1] && words[j - 1] == w,
            }
        }
        reach = next;
    }
    reach[words.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hears(pattern: &str, destination: &str) -> bool {
        Pattern::parse(pattern).expect("a wildcard pattern").matches(destination)
    }

    #[test]
    fn star_is_one_word_and_hash_or_gt_any_number() {
        assert!(hears("/topic/future.events.*", "/topic/future.events.commit"));
        assert!(!hears("/topic/future.events.*", "/topic/future.events"));
        assert!(!hears("/topic/future.events.*", "/topic/future.events.commit.x"));
        assert!(hears("/topic/a.*.c", "/topic/a.b.c"));
        assert!(!hears("/topic/a.*.c", "/topic/a.b.d"));
        for any in ["#", ">"] {
            let p = format!("/topic/a.{any}");
            assert!(hears(&p, "/topic/a.b"), "{p}");
            assert!(hears(&p, "/topic/a.b.c.d"), "{p}");
            assert!(hears(&p, "/topic/a"), "{p}");
            assert!(!hears(&p, "/topic/b.a"), "{p}");
            assert!(!hears(&p, "/queue/a.b"), "{p}");
        }
        assert!(hears("/topic/#.commit", "/topic/x.y.commit"));
        assert!(hears("/topic/#", "/topic/anything.at.all"));
    }

    #[test]
    fn names_without_wildcards_and_other_destinations_are_not_patterns() {
        assert_eq!(Pattern::parse("/topic/future.events.commit"), None);
        assert_eq!(Pattern::parse("/queue/a.*"), None);
        assert_eq!(Pattern::parse("/exchange/amq.topic/a.*"), None);
        // A word that merely contains a wildcard character is literal.
        assert_eq!(Pattern::parse("/topic/a.b*"), None);
    }

    #[test]
    fn hostile_patterns_cost_at_most_words_times_pattern() {
        let p = format!("/topic/{}", vec!["#"; 60].join("."));
        let long = format!("/topic/{}", vec!["x"; 63].join("."));
        assert!(hears(&p, &long));
        // Beyond the word cap nothing matches and nothing is built.
        assert_eq!(Pattern::parse(&format!("/topic/{}", vec!["*"; 65].join("."))), None);
        let too_long = format!("/topic/{}", vec!["x"; 10_000].join("."));
        assert!(!hears("/topic/#", &too_long));
    }
}
