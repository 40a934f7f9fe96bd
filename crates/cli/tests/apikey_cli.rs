//! `confsync apikey create|list|revoke` and `confsync config example`, the real binary.
//!
//! The apikey commands open only the store: they run with a config naming a provider (and
//! per-user OAuth, and a host key) whose secrets are not set, which `confsync config check` (and
//! `serve`) refuse, naming the variable.

mod common_tmp;
use common_tmp::TempDir;

use std::path::Path;
use std::process::{Command, Output};

const UNSET_PROVIDER_SECRET: &str = "CONFSYNC_TEST_APIKEY_UNSET_ZOOM_SECRET";
const UNSET_HOST_KEY: &str = "CONFSYNC_TEST_APIKEY_UNSET_HOST_KEY";

/// The binary with `args`, none of the CONFSYNC_* variables of the machine running the tests.
fn confsync(args: &[&str], config: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confsync"));
    cmd.args(args);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    for (name, _) in std::env::vars() {
        if name.starts_with("CONFSYNC_") {
            cmd.env_remove(name);
        }
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn apikey_commands_need_only_the_store() {
    let dir = TempDir::new("apikey-cli");
    let db = dir.0.join("data").join("keys.db");
    let config = dir.0.join("confsync.toml");
    std::fs::write(
        &config,
        format!(
            r#"[store]
path = "{}"

[provider]
kind = "zoom"

[provider.zoom]
account_id = "acct"
client_id = "client"
client_secret = "env:{UNSET_PROVIDER_SECRET}"

[google.oauth]
client_id = "1234-abc.apps.googleusercontent.com"

[serve]
public_url = "https://confsync.example.com/"
host_key = "env:{UNSET_HOST_KEY}"
"#,
            db.display()
        ),
    )
    .unwrap();

    // The whole config needs the secrets...
    let check = confsync(&["config", "check"], Some(&config));
    assert!(!check.status.success());
    assert!(
        text(&check.stderr).contains(UNSET_PROVIDER_SECRET),
        "{check:?}"
    );

    // ...the key commands do not.
    let created = confsync(&["apikey", "create", "--name", "addon"], Some(&config));
    assert!(created.status.success(), "apikey create: {created:?}");
    let key = text(&created.stdout);
    assert_eq!(key.lines().count(), 1, "{key}");
    assert!(key.trim().len() >= 32, "{key}");
    assert!(db.exists(), "the store was created with its directory");
    let second = confsync(&["apikey", "create", "--name", "ops"], Some(&config));
    assert!(second.status.success(), "{second:?}");

    let listed = confsync(&["apikey", "list"], Some(&config));
    assert!(listed.status.success(), "apikey list: {listed:?}");
    let listed = text(&listed.stdout);
    let lines: Vec<Vec<&str>> = listed.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert_eq!(
        (lines[0][0], lines[0][1], lines[0][3]),
        ("addon", "addon", "live"),
        "{listed}"
    );
    assert_eq!((lines[1][0], lines[1][3]), ("ops", "live"), "{listed}");
    assert!(!listed.contains(key.trim()), "a key is shown only once");

    let revoked = confsync(&["apikey", "revoke", "--name", "addon"], Some(&config));
    assert!(revoked.status.success(), "apikey revoke: {revoked:?}");
    let listed = text(&confsync(&["apikey", "list"], Some(&config)).stdout);
    assert!(
        listed.starts_with("addon\t") && listed.lines().next().unwrap().ends_with("\trevoked"),
        "{listed}"
    );

    let unknown = confsync(&["apikey", "revoke", "--name", "nobody"], Some(&config));
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("nobody"), "{unknown:?}");

    // A typo is still refused, naming the key.
    let typo = dir.0.join("typo.toml");
    std::fs::write(&typo, "[store]\npaht = \"x.db\"\n").unwrap();
    let refused = confsync(&["apikey", "list"], Some(&typo));
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("store.paht"), "{refused:?}");
}

/// The example shows every key of every provider's table (the issue's missing Zoom keys among
/// them) and is a valid config as printed; the markdown table lists the same keys.
#[test]
fn config_example_shows_every_provider_key() {
    let out = confsync(&["config", "example"], None);
    assert!(out.status.success(), "{out:?}");
    let example = text(&out.stdout);
    let zoom = &example[example.find("#[provider.zoom]").unwrap()..];
    let zoom = &zoom[..zoom.find("\n\n").unwrap()];
    for key in [
        "account_id",
        "client_id",
        "client_secret",
        "user_id",
        "base_url",
        "oauth_url",
        "timeout_secs",
        "default_time_zone",
        "max_occurrences",
        "reconcile_list_type",
        "reconcile_max_pages",
    ] {
        assert!(zoom.contains(&format!("\n#{key} = ")), "{key} in\n{zoom}");
    }
    for table in [
        "google",
        "google.oauth",
        "store",
        "provider",
        "provider.zoom",
        "provider.teams",
        "provider.webex",
        "provider.daily",
        "provider.jitsi",
        "provider.jitsi.jwt",
        "provider.bigbluebutton",
        "provider.webhook",
        "sync",
        "serve",
        "serve.identity",
    ] {
        assert!(example.contains(&format!("[{table}]\n")), "[{table}]");
    }

    let dir = TempDir::new("apikey-cli");
    let config = dir.0.join("example.toml");
    std::fs::write(&config, &example).unwrap();
    let check = confsync(&["config", "check"], Some(&config));
    assert!(check.status.success(), "{check:?}");

    let out = confsync(&["config", "example", "--markdown"], None);
    assert!(out.status.success(), "{out:?}");
    let table = text(&out.stdout);
    assert!(table.starts_with("| key | type | default | what it does |\n"));
    assert!(
        table.contains("| `provider.zoom.reconcile_max_pages` | integer | `20` |"),
        "{table}"
    );
    assert!(
        table.contains("| `serve.workers` | integer, 1 to 64 | `4` |"),
        "{table}"
    );
}

/// `confsync apikey create --scope` and `confsync admin`: scoped keys, and the operator's
/// listing, retry, drop and resync on the store alone.
#[test]
fn admin_commands_work_on_the_store_alone() {
    let dir = TempDir::new("apikey-cli");
    let db = dir.0.join("admin.db");
    let config = dir.0.join("confsync.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n[provider]\nkind = \"zoom\"\n[provider.zoom]\naccount_id = \"a\"\nclient_id = \"c\"\nclient_secret = \"env:{UNSET_PROVIDER_SECRET}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let created = confsync(
        &["apikey", "create", "--name", "ops", "--scope", "admin"],
        Some(&config),
    );
    assert!(created.status.success(), "{created:?}");
    let odd = confsync(
        &["apikey", "create", "--name", "odd", "--scope", "root"],
        Some(&config),
    );
    assert!(!odd.status.success());
    assert!(
        text(&odd.stderr).contains("addon, read-only, admin"),
        "{odd:?}"
    );
    let listed = confsync(&["apikey", "list"], Some(&config));
    assert!(text(&listed.stdout).contains("ops\tadmin\t"), "{listed:?}");

    let actions = confsync(&["admin", "actions"], Some(&config));
    assert!(actions.status.success(), "{actions:?}");
    assert!(
        text(&actions.stderr).contains("no failed actions"),
        "{actions:?}"
    );
    let bad = confsync(&["admin", "actions", "--state", "done"], Some(&config));
    assert!(!bad.status.success());
    let missing = confsync(&["admin", "retry", "42"], Some(&config));
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("42"), "{missing:?}");
    let unknown = confsync(&["admin", "resync", "nobody@example.com"], Some(&config));
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("does not sync calendar"),
        "{unknown:?}"
    );
}
