//! Home Assistant MQTT discovery: the retained configs that make a node's
//! sensors appear in Home Assistant by themselves.

use super::topics::Topics;

/// Home Assistant's MQTT discovery prefix (its default, which users rarely
/// change).
const HA_PREFIX: &str = "homeassistant";

/// The id Home Assistant knows one sensor's device by: `edgeprio_<node>_
/// <sensor>`, with every character a discovery topic does not allow
/// (anything but `[a-zA-Z0-9_-]`) replaced by `_`.
fn ha_device_id(node: &str, sensor: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("edgeprio_{}_{}", clean(node), clean(sensor))
}

/// `s` as the object part of an entity id: lower-case `[a-z0-9_]`, no
/// leading, trailing or doubled `_`, the form Home Assistant's entity ids
/// take.
fn ha_slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

/// Home Assistant MQTT discovery for one sensor: `(config topic, payload)`
/// for each of its three entities, each published retained.
///
/// The shape is *per-component* discovery,
/// `homeassistant/sensor/<unique_id>/config`, one entity per config, all
/// three with the same `device` block so they group under one device: every
/// Home Assistant release of the last years understands it, while
/// device-based discovery (`homeassistant/device/...`) is unknown to
/// 2024.1 and older (README, "Home Assistant"). Each config carries all of
/// its entity's options: the sensor's state topic with a value template,
/// availability from the node's status topic (the Last Will),
/// `expire_after` of three intervals so a dead sensor goes "unavailable"
/// instead of showing a stale value, and `QoS` 1.
///
/// The entity id is set twice: `default_entity_id` for Home Assistant
/// 2025.10 and newer, which deprecated `object_id` in its favour, and
/// `object_id` for older ones, whose discovery schema drops the unknown
/// `default_entity_id` silently (`extra=vol.REMOVE_EXTRA`). With both, every
/// version names the entity `sensor.edgeprio_<node>_<sensor>_<channel>`.
pub fn ha_discovery(
    topics: &Topics,
    node: &str,
    sensor: &str,
    model: &str,
    expire_after_s: u64,
    version: &str,
) -> Vec<(String, serde_json::Value)> {
    use serde_json::json;
    let id = ha_device_id(node, sensor);
    let device = json!({
        "identifiers": [id],
        "name": format!("{sensor} ({node})"),
        "manufacturer": "edgeprio",
        "model": model,
        "sw_version": version,
    });
    let origin = json!({ "name": "edgeprio", "sw_version": version });
    let entities = [
        (
            "temperature",
            json!({
                "name": "Temperature",
                "device_class": "temperature",
                "unit_of_measurement": "°C",
                "state_class": "measurement",
                "value_template": "{{ value_json.temperature_c }}",
                "suggested_display_precision": 1,
            }),
        ),
        (
            "humidity",
            json!({
                "name": "Humidity",
                "device_class": "humidity",
                "unit_of_measurement": "%",
                "state_class": "measurement",
                "value_template": "{{ value_json.humidity_pct }}",
                "suggested_display_precision": 1,
            }),
        ),
        (
            "priority",
            json!({
                "name": "Priority",
                "entity_category": "diagnostic",
                "state_class": "measurement",
                "icon": "mdi:priority-high",
                "value_template": "{{ value_json.priority }}",
            }),
        ),
    ];
    entities
        .into_iter()
        .map(|(channel, options)| {
            let unique_id = format!("{id}_{channel}");
            let object_id = ha_slug(&unique_id);
            let mut payload = json!({
                "unique_id": unique_id,
                "object_id": object_id,
                "default_entity_id": format!("sensor.{object_id}"),
                "device": device,
                "origin": origin,
                "state_topic": topics.state(sensor),
                "availability_topic": topics.status(),
                "payload_available": "online",
                "payload_not_available": "offline",
                "expire_after": expire_after_s,
                "qos": 1,
            });
            if let (Some(payload), serde_json::Value::Object(options)) =
                (payload.as_object_mut(), options)
            {
                payload.extend(options);
            }
            (format!("{HA_PREFIX}/sensor/{unique_id}/config"), payload)
        })
        .collect()
}

/// Where edgeprio 0.1 published its device-based discovery for a sensor,
/// which Home Assistant rejects (2025.4: `extra keys not allowed @
/// data['expire_after']`) or does not know (2024.1). The publisher clears a
/// config it finds retained there, so an upgraded installation leaves no
/// broken device behind.
pub fn ha_legacy_discovery_topic(node: &str, sensor: &str) -> String {
    format!("{HA_PREFIX}/device/{}/config", ha_device_id(node, sensor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha_discovery_is_one_retained_config_per_entity() {
        let t = Topics::new("edgeprio", "pi.lan");
        let configs = ha_discovery(&t, "pi.lan", "lab", "DHT22", 45, "0.1.0");
        let topics: Vec<&str> = configs.iter().map(|(topic, _)| topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/sensor/edgeprio_pi_lan_lab_temperature/config",
                "homeassistant/sensor/edgeprio_pi_lan_lab_humidity/config",
                "homeassistant/sensor/edgeprio_pi_lan_lab_priority/config",
            ]
        );
        for (topic, p) in &configs {
            let unique_id = p["unique_id"].as_str().unwrap();
            assert_eq!(*topic, format!("homeassistant/sensor/{unique_id}/config"));
            assert_eq!(p["object_id"], unique_id, "already a valid slug");
            assert_eq!(p["default_entity_id"], format!("sensor.{unique_id}"));
            assert_eq!(p["state_topic"], "edgeprio/pi.lan/lab/state");
            assert_eq!(p["availability_topic"], "edgeprio/pi.lan/status");
            assert_eq!(p["payload_available"], "online");
            assert_eq!(p["payload_not_available"], "offline");
            assert_eq!(p["expire_after"], 45, "per entity, not per device");
            assert_eq!(p["qos"], 1);
            assert_eq!(
                p["device"],
                serde_json::json!({
                    "identifiers": ["edgeprio_pi_lan_lab"], "name": "lab (pi.lan)",
                    "manufacturer": "edgeprio", "model": "DHT22", "sw_version": "0.1.0"
                }),
                "the same device block groups the three entities"
            );
            assert_eq!(
                p["origin"],
                serde_json::json!({"name": "edgeprio", "sw_version": "0.1.0"})
            );
            assert!(p.get("cmps").is_none() && p.get("p").is_none(), "{p}");
        }
        let [temp, hum, prio] = [&configs[0].1, &configs[1].1, &configs[2].1];
        assert_eq!(temp["device_class"], "temperature");
        assert_eq!(temp["unit_of_measurement"], "°C");
        assert_eq!(temp["state_class"], "measurement");
        assert_eq!(temp["value_template"], "{{ value_json.temperature_c }}");
        assert_eq!(hum["device_class"], "humidity");
        assert_eq!(hum["unit_of_measurement"], "%");
        assert_eq!(hum["state_class"], "measurement");
        assert_eq!(hum["value_template"], "{{ value_json.humidity_pct }}");
        assert_eq!(prio["entity_category"], "diagnostic");
        assert_eq!(prio["value_template"], "{{ value_json.priority }}");
        assert!(prio.get("device_class").is_none() && prio.get("unit_of_measurement").is_none());
    }

    #[test]
    fn ha_entity_ids_are_valid_slugs() {
        let t = Topics::new("edgeprio", "Pi-4.lan");
        let configs = ha_discovery(&t, "Pi-4.lan", "__Attic 2", "DHT22", 3, "0.1.0");
        assert_eq!(
            configs[0].0, "homeassistant/sensor/edgeprio_Pi-4_lan___Attic_2_temperature/config",
            "topics keep [a-zA-Z0-9_-]"
        );
        assert_eq!(
            configs[0].1["object_id"],
            "edgeprio_pi_4_lan_attic_2_temperature"
        );
        assert_eq!(
            configs[0].1["default_entity_id"],
            "sensor.edgeprio_pi_4_lan_attic_2_temperature"
        );
        assert_eq!(ha_slug("_a__B-c_"), "a_b_c");
    }

    #[test]
    fn the_legacy_device_topic_is_the_one_0_1_used() {
        assert_eq!(
            ha_legacy_discovery_topic("pi.lan", "lab"),
            "homeassistant/device/edgeprio_pi_lan_lab/config"
        );
    }
}
