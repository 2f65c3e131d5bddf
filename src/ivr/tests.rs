//! The interpreter on scripted inputs.

use super::*;

fn flow(toml: &str) -> Arc<Flow> {
    let cfg = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .unwrap();
    let flow: Flow = cfg.try_deserialize().unwrap();
    let mut issues = Vec::new();
    flow.check("ivr.test", &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    Arc::new(flow)
}

fn monday_noon_utc() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_795_392_000 + 12 * 3600).unwrap()
}

fn sunday_noon_utc() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_795_392_000 - 12 * 3600).unwrap()
}

const MAIN: &str = r#"
start = "greeting"
[nodes.greeting]
type = "play"
prompts = ["greeting"]
next = "hours"
barge_in = true
[nodes.hours]
type = "hours"
schedule = ["mon-fri 08:00-20:00"]
open = "menu"
closed = "after_hours"
[nodes.menu]
type = "menu"
prompts = ["menu"]
choices = { "1" = "sales", "2" = "support", "9" = "account", "0" = "support" }
default = "support"
timeout = "5s"
retries = 1
[nodes.account]
type = "collect"
prompts = ["enter_account"]
var = "account"
min_digits = 4
max_digits = 8
pattern = "^[0-9]+$"
next = "balance"
failure = "support"
[nodes.balance]
type = "lookup"
url = "http://127.0.0.1:8080/demo/balance?account={account}&caller={caller}"
next = "say_balance"
failure = "lookup_failed"
[nodes.say_balance]
type = "say"
before = ["balance_is"]
value = "{balance}"
next = "bye"
[nodes.lookup_failed]
type = "play"
prompts = ["lookup_failed"]
next = "support"
[nodes.sales]
type = "set"
vars = { topic = "sales" }
priority = 5
next = "queue"
[nodes.support]
type = "queue"
queue = "support"
[nodes.queue]
type = "queue"
queue = "sales"
[nodes.after_hours]
type = "hangup"
prompts = ["after_hours", "goodbye"]
[nodes.bye]
type = "hangup"
prompts = ["goodbye"]
"#;

fn vars() -> BTreeMap<String, String> {
    BTreeMap::from([("caller".to_string(), "+86 138".to_string())])
}

fn play(prompts: &[&str], barge_in: bool) -> Action {
    Action::Play {
        prompts: prompts.iter().map(|s| s.to_string()).collect(),
        barge_in,
    }
}

/// The actions hand the caller to `queue` and nothing else.
fn assert_queued_to(actions: Vec<Action>, queue: &str) {
    assert!(
        matches!(&actions[..], [Action::Queue { queue: q, .. }] if q == queue),
        "{actions:?}"
    );
}

fn without_entered(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| !matches!(a, Action::Entered { .. }))
        .collect()
}

#[test]
fn greeting_then_menu_choice_two_goes_to_support() {
    let (mut run, actions) = IvrRun::start(flow(MAIN), vars(), monday_noon_utc);
    assert_eq!(without_entered(actions), vec![play(&["greeting"], true)]);
    assert_eq!(
        without_entered(run.on(Input::PromptsDone)),
        vec![play(&["menu"], true)]
    );
    assert_eq!(
        without_entered(run.on(Input::PromptsDone)),
        vec![Action::StartTimer(Duration::from_secs(5))]
    );
    let actions = without_entered(run.on(Input::Digit('2')));
    assert_eq!(
        actions,
        vec![Action::Queue {
            queue: "support".into(),
            skills: vec![],
            priority: None
        }]
    );
    assert!(run.is_done());
    assert_eq!(run.path(), ["greeting", "hours", "menu", "support"]);
}

#[test]
fn a_key_during_the_greeting_answers_the_menu() {
    let (mut run, _) = IvrRun::start(flow(MAIN), vars(), monday_noon_utc);
    let actions = without_entered(run.on(Input::Digit('1')));
    assert_eq!(
        actions,
        vec![
            Action::StopPlayback,
            Action::Queue {
                queue: "sales".into(),
                skills: vec![],
                priority: Some(5)
            }
        ]
    );
    assert_eq!(run.vars()["topic"], "sales");
}

#[test]
fn invalid_key_replays_then_timeout_exhausts_retries_to_default() {
    let (mut run, _) = IvrRun::start(flow(MAIN), vars(), monday_noon_utc);
    run.on(Input::PromptsDone); // greeting done → menu playing
    run.on(Input::PromptsDone); // menu done → timer
    assert_eq!(
        without_entered(run.on(Input::Digit('7'))),
        vec![play(&["invalid", "menu"], true)]
    );
    run.on(Input::PromptsDone);
    assert_queued_to(without_entered(run.on(Input::Timeout)), "support");
}

#[test]
fn after_hours_branch_plays_and_hangs_up() {
    let (mut run, actions) = IvrRun::start(flow(MAIN), vars(), sunday_noon_utc);
    assert_eq!(without_entered(actions), vec![play(&["greeting"], true)]);
    assert_eq!(
        without_entered(run.on(Input::PromptsDone)),
        vec![play(&["after_hours", "goodbye"], false)]
    );
    assert_eq!(run.on(Input::Digit('1')), vec![], "no barge-in on goodbye");
    assert_eq!(run.on(Input::PromptsDone), vec![Action::Hangup]);
    assert!(run.is_done());
}

fn to_account(run: &mut IvrRun) {
    run.on(Input::PromptsDone);
    run.on(Input::PromptsDone);
    let actions = without_entered(run.on(Input::Digit('9')));
    assert_eq!(actions, vec![play(&["enter_account"], true)]);
}

#[test]
fn account_self_service_collects_looks_up_and_says_the_balance() {
    let (mut run, _) = IvrRun::start(flow(MAIN), vars(), monday_noon_utc);
    to_account(&mut run);
    for d in ['1', '2', '3'] {
        assert_eq!(
            without_entered(run.on(Input::Digit(d)))
                .into_iter()
                .filter(|a| *a != Action::StopPlayback)
                .collect::<Vec<_>>(),
            vec![Action::StartTimer(Duration::from_secs(3))]
        );
    }
    let actions = without_entered(run.on(Input::Digit('4')));
    assert_eq!(actions, vec![Action::StartTimer(Duration::from_secs(3))]);
    let actions = without_entered(run.on(Input::Digit('#')));
    assert_eq!(
        actions,
        vec![Action::Lookup {
            url: "http://127.0.0.1:8080/demo/balance?account=1234&caller=%2B86%20138".into(),
            timeout: Duration::from_secs(3)
        }]
    );
    assert_eq!(run.vars()["account"], "1234");
    let reply = LookupReply {
        vars: BTreeMap::from([("balance".to_string(), "12.5".to_string())]),
        next: None,
    };
    assert_eq!(
        without_entered(run.on(Input::LookupDone(Ok(reply)))),
        vec![play(
            &["balance_is", "digit_1", "digit_2", "point", "digit_5"],
            false
        )]
    );
    assert_eq!(
        without_entered(run.on(Input::PromptsDone)),
        vec![play(&["goodbye"], false)]
    );
    assert_eq!(run.on(Input::PromptsDone), vec![Action::Hangup]);
}

#[test]
fn too_short_account_is_refused_then_failure_branch() {
    let (mut run, _) = IvrRun::start(flow(MAIN), vars(), monday_noon_utc);
    to_account(&mut run);
    run.on(Input::Digit('1'));
    let actions = without_entered(run.on(Input::Digit('#')));
    assert_eq!(actions, vec![play(&["invalid", "enter_account"], true)]);
    run.on(Input::PromptsDone);
    run.on(Input::Timeout);
    run.on(Input::PromptsDone);
    assert_queued_to(without_entered(run.on(Input::Timeout)), "support");
}

#[test]
fn max_digits_ends_collection_without_terminator() {
    let (mut run, _) = IvrRun::start(flow(MAIN), vars(), monday_noon_utc);
    to_account(&mut run);
    let mut last = Vec::new();
    for d in "87654321".chars() {
        last = without_entered(run.on(Input::Digit(d)));
    }
    assert!(matches!(&last[..], [Action::Lookup { .. }]), "{last:?}");
    assert_eq!(run.vars()["account"], "87654321");
}

/// A run that entered account 1234 and waits for the lookup.
fn at_lookup() -> IvrRun {
    let (mut run, _) = IvrRun::start(flow(MAIN), vars(), monday_noon_utc);
    to_account(&mut run);
    for d in "1234#".chars() {
        run.on(Input::Digit(d));
    }
    run
}

#[test]
fn lookup_failure_and_lookup_choosing_the_next_node() {
    let mut run = at_lookup();
    assert_eq!(
        without_entered(run.on(Input::LookupDone(Err("timeout".into())))),
        vec![play(&["lookup_failed"], false)]
    );

    let mut run = at_lookup();
    let reply = LookupReply {
        vars: BTreeMap::new(),
        next: Some("after_hours".into()),
    };
    assert_eq!(
        without_entered(run.on(Input::LookupDone(Ok(reply)))),
        vec![play(&["after_hours", "goodbye"], false)]
    );
    // a `next` that is not a node of the flow is ignored
    let mut run = at_lookup();
    let reply = LookupReply {
        vars: BTreeMap::from([("balance".to_string(), "7".to_string())]),
        next: Some("../../etc".into()),
    };
    assert_eq!(
        without_entered(run.on(Input::LookupDone(Ok(reply)))),
        vec![play(&["balance_is", "digit_7"], false)]
    );
}

#[test]
fn a_flow_that_loops_without_waiting_hangs_up() {
    let f = flow(
        r#"
start = "a"
[nodes.a]
type = "set"
next = "b"
[nodes.b]
type = "set"
next = "a"
"#,
    );
    let (run, actions) = IvrRun::start(f, BTreeMap::new(), monday_noon_utc);
    assert_eq!(actions.last(), Some(&Action::Hangup));
    assert!(run.is_done());
}

#[test]
fn broken_flows_name_the_node_and_field() {
    let cfg = config::Config::builder()
        .add_source(config::File::from_str(
            r#"
start = "nowhere"
[nodes.menu]
type = "menu"
prompts = ["menu"]
choices = { "1" = "ghost", "12" = "menu" }
default = "menu"
[nodes.c]
type = "collect"
prompts = []
var = "bad var"
max_digits = 0
pattern = "("
next = "menu"
failure = "menu"
[nodes.h]
type = "hours"
schedule = ["someday 8-9"]
open = "menu"
closed = "menu"
[nodes.l]
type = "lookup"
url = "ftp://x"
next = "menu"
failure = "menu"
"#,
            config::FileFormat::Toml,
        ))
        .build()
        .unwrap();
    let flow: Flow = cfg.try_deserialize().unwrap();
    let mut issues = Vec::new();
    flow.check("ivr.main", &mut issues);
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    for expected in [
        "ivr.main.start",
        "ivr.main.nodes.menu.choices",
        "ivr.main.nodes.c.max_digits",
        "ivr.main.nodes.c.var",
        "ivr.main.nodes.c.pattern",
        "ivr.main.nodes.h.schedule",
        "ivr.main.nodes.l.url",
    ] {
        assert!(keys.contains(&expected), "{expected} missing in {keys:?}");
    }
    assert_eq!(
        keys.iter()
            .filter(|k| **k == "ivr.main.nodes.menu.choices")
            .count(),
        2,
        "one for the missing node, one for the two-key choice: {issues:?}"
    );
}

#[test]
fn unknown_node_type_or_field_is_refused() {
    for text in [
        "start = \"a\"\n[nodes.a]\ntype = \"dance\"\n",
        "start = \"a\"\n[nodes.a]\ntype = \"queue\"\nqueue = \"s\"\ncolour = \"red\"\n",
    ] {
        let cfg = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .unwrap();
        assert!(cfg.try_deserialize::<Flow>().is_err(), "{text}");
    }
}

#[test]
fn say_reads_digits_and_points() {
    assert_eq!(
        say_prompts("30.05"),
        ["digit_3", "digit_0", "point", "digit_0", "digit_5"]
    );
    assert!(say_prompts("abc").is_empty());
}

const SECRETS: &str = r#"
start = "account"
[nodes.account]
type = "collect"
prompts = ["enter_account"]
var = "account"
max_digits = 4
next = "pin"
failure = "q"
[nodes.pin]
type = "collect"
prompts = ["enter_pin"]
var = "pin"
max_digits = 4
next = "code"
failure = "q"
[nodes.code]
type = "collect"
prompts = ["enter_pin"]
var = "code"
max_digits = 2
sensitive = true
next = "q"
failure = "q"
[nodes.q]
type = "queue"
queue = "support"
"#;

#[test]
fn secrets_are_masked_and_known_while_they_are_keyed() {
    let (mut run, _) = IvrRun::start(flow(SECRETS), BTreeMap::new(), monday_noon_utc);
    assert!(!run.collecting_secret(), "an account number is no secret");
    run.on(Input::PromptsDone);
    for d in "1001".chars() {
        run.on(Input::Digit(d));
    }
    assert_eq!(run.node(), "pin");
    assert!(run.collecting_secret(), "pin, by its name");
    run.on(Input::PromptsDone);
    for d in "4321".chars() {
        run.on(Input::Digit(d));
    }
    assert_eq!(run.node(), "code");
    assert!(run.collecting_secret(), "code, marked sensitive");
    run.on(Input::PromptsDone);
    for d in "77".chars() {
        run.on(Input::Digit(d));
    }
    assert_eq!(run.vars()["pin"], "4321", "the flow itself still has it");
    let shown = run.shown_vars();
    assert_eq!(shown["account"], "1001");
    assert_eq!(shown["pin"], "***");
    assert_eq!(shown["code"], "***");
}

#[test]
fn secret_names_are_recognised() {
    use crate::config::ivr::is_sensitive_name;
    for name in [
        "pin",
        "PIN",
        "account_pin",
        "pin2",
        "password",
        "new_password",
        "card",
        "card_number",
        "cardno",
        "cvv",
        "passcode",
    ] {
        assert!(is_sensitive_name(name), "{name}");
    }
    for name in [
        "account",
        "caller",
        "spinner",
        "balance",
        "survey_score",
        "number",
    ] {
        assert!(!is_sensitive_name(name), "{name}");
    }
}
