//! Hostile input, generated (proptest; `tests/run` runs these with the unit tests):
//! definitions, templates, filters and cron expressions never panic, and cost bounded
//! time, whatever the text.

use proptest::prelude::*;
use serde_json::json;

use crate::template;
use crate::validate::{Format, load};

/// Text made of the pieces that parsers trip on, as well as anything at all.
fn hostile_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "{{",
        "}}",
        "{%",
        "%}",
        "&a",
        "*a",
        "[",
        "]",
        "{",
        "}",
        ":",
        "- ",
        "\n",
        "  ",
        "'",
        "\"",
        "id: x",
        "steps:",
        "type: http",
        "triggers:",
        "!!binary",
        "---",
        "...",
        "|",
        ">",
        "#",
        "\u{0}",
        "é",
        "\\",
        "${",
        "secrets.",
        "range(",
        ")",
        "*",
        "9999999999999999999",
    ]);
    prop_oneof![
        prop::collection::vec(pieces, 0..40).prop_map(|p| p.concat()),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn definitions_never_panic(text in hostile_text()) {
        let _ = load(&text, Format::Yaml);
        let _ = load(&text, Format::Json);
    }

    #[test]
    fn templates_never_panic_and_stay_bounded(text in hostile_text()) {
        let ctx = json!({"trigger": {"body": {"n": 1, "s": "x"}}});
        let started = std::time::Instant::now();
        let _ = template::render_string(&text, &ctx);
        let _ = template::eval(&text, &ctx);
        let _ = template::check_string(&text);
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn cron_expressions_never_panic(text in hostile_text(), zone in prop::option::of(hostile_text())) {
        let _ = crate::time::cron::CronSchedule::parse(&text, zone.as_deref());
    }

    #[test]
    fn filters_never_panic(a in hostile_text(), b in hostile_text()) {
        let input = serde_json::from_str(&a).unwrap_or(json!({"body": a}));
        let filter = serde_json::from_str(&b).unwrap_or(json!({"body": b}));
        let _ = crate::filter::check(&input, &filter, "");
    }
}
