//! `[demo]`: the demo's own services, and the refusal to face a network while
//! the demo configuration's public secrets (passwords, API tokens) are set.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{EMBEDDED_DEFAULT, Problems, Section, Settings};

/// `[demo]`: the demo's own services, and whether its secrets may face a
/// network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDemo {
    /// Serve the demo account service `GET /demo/balance`.
    pub balance_service: bool,
    /// Start even though a listener is off loopback while a password or API
    /// token of the demo configuration is configured.
    pub allow_demo_credentials: bool,
}

/// `[demo]`, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DemoSettings {
    pub balance_service: bool,
    pub allow_demo_credentials: bool,
}

/// Why `serve` refuses a configuration that exposes demo secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{origin}: refusing to start: {listeners} not on loopback while these keys hold the demo configuration's public secrets: {keys}. \
Set your own (mount your configuration, or set e.g. HOTLINE__AGENTS__1001__PASSWORD in the environment), \
or set [demo] allow_demo_credentials = true to run the demo anyway",
    keys = keys.join(", "),
    listeners = listeners.join(", ")
)]
pub struct DemoExposure {
    pub origin: String,
    /// The listeners off loopback, as "key (address)".
    pub listeners: Vec<String>,
    /// Every key holding a demo secret.
    pub keys: Vec<String>,
}

impl Section for RawDemo {
    type Checked = DemoSettings;

    fn check(&self, _problems: &mut Problems) -> DemoSettings {
        DemoSettings {
            balance_service: self.balance_service,
            allow_demo_credentials: self.allow_demo_credentials,
        }
    }
}

impl Settings {
    /// The keys holding a password or API token shipped with the demo
    /// configuration (the embedded default): public, so never fit for a
    /// network.
    pub fn demo_secret_keys(&self) -> Vec<String> {
        let Ok(demo) = Settings::from_toml(EMBEDDED_DEFAULT, "demo", &BTreeMap::new()) else {
            return Vec::new();
        };
        let passwords: std::collections::BTreeSet<&str> = demo
            .agents
            .values()
            .map(|a| a.password.as_str())
            .chain(
                demo.trunks
                    .iter()
                    .filter_map(|t| t.credentials.as_ref().map(|c| c.password.as_str())),
            )
            .collect();
        let mut keys = Vec::new();
        for (id, agent) in &self.agents {
            if passwords.contains(agent.password.as_str()) {
                keys.push(format!("agents.{id}.password"));
            }
        }
        for trunk in &self.trunks {
            if let Some(c) = &trunk.credentials
                && passwords.contains(c.password.as_str())
            {
                keys.push(format!("trunks.{}.password", trunk.name));
            }
        }
        for token in &self.api.tokens {
            if demo.api.tokens.iter().any(|d| d.sha256 == token.sha256) {
                keys.push(format!("api.tokens.{}.sha256", token.name));
            }
        }
        keys
    }

    /// The listeners reachable from beyond this machine, as "key (address)".
    pub fn listeners_off_loopback(&self) -> Vec<String> {
        [
            ("sip.udp", self.sip.udp),
            ("sip.tcp", self.sip.tcp),
            ("http.listen", self.http_listen),
        ]
        .into_iter()
        .filter_map(|(key, addr)| {
            addr.filter(|a| !a.ip().is_loopback())
                .map(|a| format!("{key} ({a})"))
        })
        .collect()
    }

    /// Refuses demo secrets on a listener off loopback, unless
    /// `demo.allow_demo_credentials`.
    pub fn check_demo_exposure(&self) -> Result<(), DemoExposure> {
        if self.demo.allow_demo_credentials {
            return Ok(());
        }
        let listeners = self.listeners_off_loopback();
        if listeners.is_empty() {
            return Ok(());
        }
        let keys = self.demo_secret_keys();
        if keys.is_empty() {
            return Ok(());
        }
        Err(DemoExposure {
            origin: self.origin.clone(),
            listeners,
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_with(env: &[(&str, &str)]) -> Settings {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_toml(EMBEDDED_DEFAULT, "demo.toml", &env).unwrap()
    }

    #[test]
    fn demo_secrets_may_not_face_a_network() {
        assert_eq!(
            demo_with(&[]).check_demo_exposure(),
            Ok(()),
            "loopback only"
        );
        let exposed = demo_with(&[("HOTLINE__SIP__UDP", "0.0.0.0:5060")]);
        let refusal = exposed.check_demo_exposure().unwrap_err();
        assert_eq!(refusal.listeners, ["sip.udp (0.0.0.0:5060)"]);
        for key in ["agents.1001.password", "agents.1004.password"] {
            assert!(refusal.keys.iter().any(|k| k == key), "{key}: {refusal}");
        }
        assert!(
            refusal
                .to_string()
                .starts_with("demo.toml: refusing to start")
        );
        let allowed = demo_with(&[
            ("HOTLINE__SIP__UDP", "0.0.0.0:5060"),
            ("HOTLINE__DEMO__ALLOW_DEMO_CREDENTIALS", "true"),
        ]);
        assert_eq!(allowed.check_demo_exposure(), Ok(()));
    }

    #[test]
    fn own_secrets_may_face_a_network() {
        let own = demo_with(&[
            ("HOTLINE__HTTP__LISTEN", "0.0.0.0:8080"),
            ("HOTLINE__AGENTS__1001__PASSWORD", "s3cret-1001"),
        ]);
        let refusal = own.check_demo_exposure().unwrap_err();
        assert!(
            !refusal.keys.iter().any(|k| k == "agents.1001.password"),
            "{refusal}"
        );
        assert!(refusal.keys.iter().any(|k| k == "agents.1002.password"));
    }
}
