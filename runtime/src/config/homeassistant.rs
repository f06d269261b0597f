//! Validating `[homeassistant]`: the discovery prefix, whether announced
//! devices are taken on, and the values announced in return.

use toml::Spanned;

use super::error::ConfigError;
use super::load::Cx;
use super::model::*;
use super::raw::*;
use crate::topic::validate_topic_name;

/// Home Assistant's own default prefix.
pub const DEFAULT_PREFIX: &str = "homeassistant";

impl Cx<'_> {
    pub(super) fn homeassistant(&self, raw: &Spanned<RawHomeAssistant>) -> Result<HomeAssistant, ConfigError> {
        let h = raw.get_ref();
        let prefix = match &h.prefix {
            None => DEFAULT_PREFIX.to_owned(),
            Some(p) => {
                let text = p.get_ref().trim_end_matches('/');
                if text.is_empty() || text.contains(['+', '#']) || validate_topic_name(text).is_err() {
                    return Err(self.err(
                        p.span(),
                        "homeassistant.prefix",
                        "must be a topic name, e.g. \"homeassistant\"",
                    ));
                }
                text.to_owned()
            }
        };
        let mut announce: Vec<Announce> = Vec::new();
        for (i, a) in h.announce.iter().enumerate() {
            let a = a.get_ref();
            let key = |k: &str| format!("homeassistant.announce[{i}].{k}");
            let name = a.name.get_ref().trim().to_owned();
            let object = crate::profile::homeassistant::device_id(&name);
            if object.is_empty() || announce.iter().any(|o| crate::profile::homeassistant::device_id(&o.name) == object)
            {
                return Err(self.err(
                    a.name.span(),
                    key("name"),
                    "must be given, with letters or digits, and differ from the other announced names",
                ));
            }
            validate_topic_name(a.topic.get_ref())
                .map_err(|e| self.err(a.topic.span(), key("topic"), format!("{:?} {e}", a.topic.get_ref())))?;
            let field = match &a.field {
                None => None,
                Some(f) => {
                    let path: Vec<String> = f.get_ref().split('.').map(str::to_owned).collect();
                    if path.iter().any(|k| k.is_empty() || k.contains(['\'', '"', '{', '}'])) {
                        return Err(self.err(
                            f.span(),
                            key("field"),
                            "is a dotted path into the JSON payload, e.g. \"average\" or \"climate.temperature\"",
                        ));
                    }
                    Some(path)
                }
            };
            let component = match a.component.as_ref().map(|c| (c.get_ref().as_str(), c.span())) {
                None => "sensor".to_owned(),
                Some((c @ ("sensor" | "binary_sensor"), _)) => c.to_owned(),
                Some((other, span)) => {
                    return Err(self.err(
                        span,
                        key("component"),
                        format!("{other:?}: announced values are \"sensor\" or \"binary_sensor\""),
                    ))
                }
            };
            announce.push(Announce {
                name,
                topic: a.topic.get_ref().clone(),
                field,
                component,
                unit: a.unit.clone(),
                device_class: a.device_class.clone(),
            });
        }
        Ok(HomeAssistant { prefix, discovery: h.discovery.unwrap_or(true), announce })
    }
}
