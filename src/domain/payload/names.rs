//! What a node name and a sensor id may look like. Both become MQTT topic
//! levels (`<prefix>/<node>/<sensor>/state`) and columns users filter on,
//! so the config (for this node's own names), the gateway (for the names it
//! reads out of topics and payloads) and the collectors apply the same
//! rule: a name one accepts, all accept.

/// The longest node name, in bytes.
pub const NODE_MAX_LEN: usize = 64;

/// The longest sensor id, in bytes.
pub const SENSOR_MAX_LEN: usize = 32;

/// Why a string is not a node name or sensor id. The messages complete a
/// sentence that starts with the name: `node = "a b" may not contain ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or longer than the limit.
    #[error("must be 1 to {max} characters long")]
    Length {
        /// The limit that applies ([`NODE_MAX_LEN`] or [`SENSOR_MAX_LEN`]).
        max: usize,
    },
    /// A node name with a character that cannot be in one topic level.
    #[error("may not contain spaces, '/', '+' or '#' (it becomes an MQTT topic level)")]
    TopicLevel,
    /// A sensor id with a character outside `[A-Za-z0-9_-]`.
    #[error("may only use letters, digits, '-' and '_'")]
    SensorChars,
}

/// Checks a node name: 1 to [`NODE_MAX_LEN`] bytes, no whitespace or
/// control characters, none of `/`, `+`, `#` (a level separator or a
/// wildcard would make the node's topics mean something else). Hostnames,
/// dots included, pass.
pub fn check_node(name: &str) -> Result<(), NameError> {
    check_len(name, NODE_MAX_LEN)?;
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '+' | '#'))
    {
        return Err(NameError::TopicLevel);
    }
    Ok(())
}

/// Checks a sensor id: 1 to [`SENSOR_MAX_LEN`] bytes of `[A-Za-z0-9_-]`,
/// stricter than a node name because it also names files and Home
/// Assistant entities.
pub fn check_sensor(id: &str) -> Result<(), NameError> {
    check_len(id, SENSOR_MAX_LEN)?;
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(NameError::SensorChars);
    }
    Ok(())
}

fn check_len(name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() || name.len() > max {
        return Err(NameError::Length { max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_one_topic_level() {
        for good in ["pi", "pi-greenhouse.lan", "Pi_4", &"n".repeat(64), "ünï"] {
            assert_eq!(check_node(good), Ok(()), "{good:?}");
        }
        assert_eq!(check_node(""), Err(NameError::Length { max: 64 }));
        assert_eq!(
            check_node(&"n".repeat(65)),
            Err(NameError::Length { max: 64 })
        );
        for bad in ["a/b", "a+", "#", "a b", "a\tb", "a\u{0}b", "a\nb"] {
            assert_eq!(check_node(bad), Err(NameError::TopicLevel), "{bad:?}");
        }
    }

    #[test]
    fn sensor_ids_are_letters_digits_dashes_and_underscores() {
        for good in ["lab", "attic-2", "A_1", &"s".repeat(32)] {
            assert_eq!(check_sensor(good), Ok(()), "{good:?}");
        }
        assert_eq!(check_sensor(""), Err(NameError::Length { max: 32 }));
        assert_eq!(
            check_sensor(&"s".repeat(33)),
            Err(NameError::Length { max: 32 })
        );
        for bad in ["a.b", "a/b", "a b", "é", "a+"] {
            assert_eq!(check_sensor(bad), Err(NameError::SensorChars), "{bad:?}");
        }
    }

    #[test]
    fn messages_complete_a_sentence_about_the_name() {
        assert_eq!(
            NameError::TopicLevel.to_string(),
            "may not contain spaces, '/', '+' or '#' (it becomes an MQTT topic level)"
        );
        assert_eq!(
            NameError::Length { max: 32 }.to_string(),
            "must be 1 to 32 characters long"
        );
    }
}
