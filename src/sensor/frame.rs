//! What the four data bytes of a DHT22 or DHT11 frame mean: pure decoding,
//! no I/O, so every frame a real part or a clone sends is tested here.
//!
//! A DHT22 sends humidity x10 as a 16-bit word, then temperature x10 as a
//! 16-bit word. The datasheet encodes a negative temperature as
//! sign-magnitude (bit 15 = sign, bits 0-14 = tenths); many clones send
//! two's complement instead (the word as an `i16`). Within the DHT22 range
//! the negative words of the two never overlap (sign-magnitude -40.0..-0.0
//! is 0x8000..0x8190, two's complement -40.0..-0.1 is 0xFE70..0xFFFF), so
//! `negative = "auto"` decides from the raw bits, and a word plausible in
//! neither is a failed read, never a guess.
//!
//! A DHT11 sends humidity integer and tenth, temperature integer and tenth,
//! one byte each. The original part always sends 0 tenths; ASAIR's DHT11,
//! now the common one, sends tenths (0-9) and marks a negative temperature
//! with bit 7 of the temperature's tenth byte, with no other transform (as
//! reported in adafruit/DHT-sensor-library#199 and winlinvip/SimpleDHT#51;
//! Adafruit's own `-1 - integer + tenth` reads such frames wrong, and the
//! Linux driver accepts only the 0-tenths form). Its range is 0..50 °C, so
//! a negative value is rejected by validation anyway: decoding it right
//! only makes the message right.
//!
//! An all-zero frame (0.0 °C, 0.0 %RH, checksum 0) passes any checksum and
//! is what a wedged sensor or a missing pull-up produces (every bit read as
//! a short "0"): it is a failed read, not a reading.

use std::fmt;
use std::time::Duration;

use crate::domain::{Channel, ErrorKind, Sample, SensorRange};

/// The part on the wire: decides the frame format, start pulse, spacing
/// and range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// DHT22 / AM2302 and its clones.
    Dht22,
    /// DHT11.
    Dht11,
}

impl Model {
    /// The least time between two start pulses (datasheets: 2 s for the
    /// DHT22, 1 s for the DHT11); a faster read gets no answer.
    pub const fn min_spacing(self) -> Duration {
        match self {
            Model::Dht22 => Duration::from_secs(2),
            Model::Dht11 => Duration::from_secs(1),
        }
    }

    /// How long the host holds the line low to start a frame: the DHT22
    /// wants >= 1 ms, the DHT11 >= 18 ms.
    pub const fn start_pulse(self) -> Duration {
        match self {
            Model::Dht22 => Duration::from_millis(1),
            Model::Dht11 => Duration::from_millis(18),
        }
    }

    /// What the part can measure.
    pub const fn range(self) -> SensorRange {
        match self {
            Model::Dht22 => SensorRange::DHT22,
            Model::Dht11 => SensorRange::DHT11,
        }
    }

    /// The `kind` value in the config.
    pub const fn kind(self) -> &'static str {
        match self {
            Model::Dht22 => "dht22",
            Model::Dht11 => "dht11",
        }
    }
}

/// The `[[sensor]] negative` setting: how a DHT22's negative temperatures
/// are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Negative {
    /// Decide per frame from the raw bits (the encodings never overlap in
    /// range), logging which one the sensor uses.
    #[default]
    Auto,
    /// Only the datasheet's sign-magnitude.
    SignMagnitude,
    /// Only two's complement (many clones).
    TwosComplement,
}

impl Negative {
    /// The value as written in the config.
    pub const fn name(self) -> &'static str {
        match self {
            Negative::Auto => "auto",
            Negative::SignMagnitude => "sign-magnitude",
            Negative::TwosComplement => "twos-complement",
        }
    }

    /// Every setting, in the order the README lists them.
    pub const ALL: [Negative; 3] = [
        Negative::Auto,
        Negative::SignMagnitude,
        Negative::TwosComplement,
    ];

    /// The one encoding this setting allows, `None` for `auto`.
    const fn forced(self) -> Option<Encoding> {
        match self {
            Negative::Auto => None,
            Negative::SignMagnitude => Some(Encoding::SignMagnitude),
            Negative::TwosComplement => Some(Encoding::TwosComplement),
        }
    }
}

/// How a negative temperature word was (or would be) encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Bit 15 = sign, bits 0-14 = tenths (the datasheet).
    SignMagnitude,
    /// The word as an `i16`, in tenths (many clones).
    TwosComplement,
}

impl Encoding {
    /// The `negative` setting that forces this encoding.
    pub const fn setting(self) -> Negative {
        match self {
            Encoding::SignMagnitude => Negative::SignMagnitude,
            Encoding::TwosComplement => Negative::TwosComplement,
        }
    }

    /// The words of this encoding, for messages.
    pub const fn describe(self) -> &'static str {
        match self {
            Encoding::SignMagnitude => "sign-magnitude (the datasheet's)",
            Encoding::TwosComplement => "two's complement (a clone)",
        }
    }

    /// The temperature in °C of a word with bit 15 set, read this way.
    fn decode(self, word: u16) -> f64 {
        let tenths = match self {
            Encoding::SignMagnitude => -i32::from(word & 0x7FFF),
            Encoding::TwosComplement => i32::from(i16::from_be_bytes(word.to_be_bytes())),
        };
        // `+ 0.0` turns the sign-magnitude -0.0 (0x8000) into 0.0.
        f64::from(tenths) / 10.0 + 0.0
    }

    const fn other(self) -> Encoding {
        match self {
            Encoding::SignMagnitude => Encoding::TwosComplement,
            Encoding::TwosComplement => Encoding::SignMagnitude,
        }
    }
}

/// A frame's values, and how its temperature's sign was encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decoded {
    /// The values, exact to the tenth.
    pub sample: Sample,
    /// The encoding a negative DHT22 temperature was read in; `None` for a
    /// word without the sign bit (both encodings agree) and for a DHT11.
    pub negative: Option<Encoding>,
    /// The raw temperature word, for the log line that says how it was read.
    pub word: u16,
}

/// A frame that passed its checksum but carries no reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameError {
    /// All four data bytes and the checksum are zero.
    AllZero,
    /// A negative temperature word that is inside the DHT22 range in
    /// neither encoding.
    Implausible {
        /// The raw temperature word.
        word: u16,
        /// Its value read as sign-magnitude.
        sign_magnitude: f64,
        /// Its value read as two's complement.
        twos_complement: f64,
    },
    /// A negative temperature word that the configured encoding puts out of
    /// range, while the other encoding decodes it.
    Mismatch {
        /// The raw temperature word.
        word: u16,
        /// The configured encoding.
        forced: Encoding,
        /// Its value in the configured encoding.
        value: f64,
        /// Its value in the other encoding, which is in range.
        other: f64,
    },
    /// A DHT11 tenth byte above 9: not a DHT11 frame.
    NotDht11 {
        /// Which data byte (1 = humidity tenth, 3 = temperature tenth).
        byte: usize,
        /// Its value, without the sign bit.
        value: u8,
    },
}

impl FrameError {
    /// The `sensor_errors.kind` it is counted as.
    ///
    /// An all-zero frame is `checksum`: the frame arrived but its integrity
    /// check cannot tell it from no data (zeros sum to zero), which is what
    /// a checksum failure means to someone reading the log. The others are
    /// `range`: the frame decodes, but to no value the part can measure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FrameError::AllZero => ErrorKind::Checksum,
            FrameError::Implausible { .. }
            | FrameError::Mismatch { .. }
            | FrameError::NotDht11 { .. } => ErrorKind::Range,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (lo, hi) = SensorRange::DHT22.limits.temperature;
        match *self {
            FrameError::AllZero => f.write_str(
                "all-zero frame (0.0 °C, 0.0 %RH, checksum 0): the sensor sent no data bits; \
                 usually a missing or weak pull-up (10 kOhm between data and 3.3 V) or a wedged \
                 sensor (power-cycle it)",
            ),
            FrameError::Implausible {
                word,
                sign_magnitude,
                twos_complement,
            } => write!(
                f,
                "temperature word 0x{word:04X} is {sign_magnitude:.1} °C as sign-magnitude and \
                 {twos_complement:.1} °C as two's complement: outside the DHT22 range {lo}..{hi} \
                 either way (a corrupted frame)"
            ),
            FrameError::Mismatch {
                word,
                forced,
                value,
                other,
            } => write!(
                f,
                "temperature word 0x{word:04X} is {value:.1} °C with negative = \"{}\", outside \
                 the DHT22 range {lo}..{hi}; it is {other:.1} °C with negative = \"{}\" (or \
                 \"auto\"): set that for this sensor",
                forced.setting().name(),
                forced.other().setting().name()
            ),
            FrameError::NotDht11 { byte, value } => write!(
                f,
                "data byte {byte} is {value}, but a DHT11 sends a tenth (0-9) there: \
                 not a DHT11 frame (is this a DHT22 configured as kind = \"dht11\"?)"
            ),
        }
    }
}

/// Decodes the four data bytes (the checksum already matched) of `model`,
/// reading negative DHT22 temperatures as `negative` says.
pub fn decode(model: Model, negative: Negative, bytes: [u8; 4]) -> Result<Decoded, FrameError> {
    if bytes == [0; 4] {
        return Err(FrameError::AllZero);
    }
    match model {
        Model::Dht22 => decode_dht22(negative, bytes),
        Model::Dht11 => decode_dht11(bytes),
    }
}

fn decode_dht22(negative: Negative, [h1, h0, t1, t0]: [u8; 4]) -> Result<Decoded, FrameError> {
    let humidity = f64::from(u16::from_be_bytes([h1, h0])) / 10.0;
    let word = u16::from_be_bytes([t1, t0]);
    let (temperature, negative) = dht22_temperature(negative, word)?;
    Ok(Decoded {
        sample: Sample::new(temperature, humidity),
        negative,
        word,
    })
}

/// A DHT22 temperature word in °C, a negative one read as `negative` says,
/// and the encoding it was read in (`None` without the sign bit). Shared by
/// the GPIO backend and `kind = "iio"`, which rebuilds the word from what
/// the kernel driver reports.
pub fn dht22_temperature(
    negative: Negative,
    word: u16,
) -> Result<(f64, Option<Encoding>), FrameError> {
    if word & 0x8000 == 0 {
        // No sign bit: both encodings read the same positive value, and the
        // range check decides whether it is one the part can measure.
        return Ok((f64::from(word) / 10.0, None));
    }
    let plausible = |e: Encoding| {
        let v = e.decode(word);
        SensorRange::DHT22
            .contains(Channel::Temperature, v)
            .then_some(v)
    };
    let sm = plausible(Encoding::SignMagnitude);
    let tc = plausible(Encoding::TwosComplement);
    match (negative.forced(), sm, tc) {
        (None | Some(Encoding::SignMagnitude), Some(v), _) => {
            Ok((v, Some(Encoding::SignMagnitude)))
        }
        (None | Some(Encoding::TwosComplement), _, Some(v)) => {
            Ok((v, Some(Encoding::TwosComplement)))
        }
        (Some(forced), _, _) if sm.or(tc).is_some() => Err(FrameError::Mismatch {
            word,
            forced,
            value: forced.decode(word),
            other: forced.other().decode(word),
        }),
        _ => Err(FrameError::Implausible {
            word,
            sign_magnitude: Encoding::SignMagnitude.decode(word),
            twos_complement: Encoding::TwosComplement.decode(word),
        }),
    }
}

fn decode_dht11([h, h_tenth, t, t_tenth]: [u8; 4]) -> Result<Decoded, FrameError> {
    let tenth = |byte: usize, v: u8| {
        if v <= 9 {
            Ok(v)
        } else {
            Err(FrameError::NotDht11 { byte, value: v })
        }
    };
    let h_tenth = tenth(1, h_tenth)?;
    let t_magnitude = tenth(3, t_tenth & 0x7F)?;
    let tenths = |int: u8, frac: u8| f64::from(u16::from(int) * 10 + u16::from(frac)) / 10.0;
    let mut temperature = tenths(t, t_magnitude);
    if t_tenth & 0x80 != 0 {
        temperature = -temperature + 0.0;
    }
    Ok(Decoded {
        sample: Sample::new(temperature, tenths(h, h_tenth)),
        negative: None,
        word: u16::from_be_bytes([t, t_tenth]),
    })
}

/// What one more negative frame says about a sensor's encoding, for the
/// log: the first one is worth an info line, a change a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first negative frame of this sensor.
    First(Encoding),
    /// The same encoding as before.
    Same,
    /// A different encoding than the previous negative frame.
    Changed {
        /// The encoding seen before.
        from: Encoding,
        /// The encoding of this frame.
        to: Encoding,
    },
}

/// The encoding a sensor's negative frames arrive in, as far as seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodingTracker {
    /// The encoding of the last negative frame decoded, `None` until one.
    last: Option<Encoding>,
}

impl EncodingTracker {
    /// Records a negative frame decoded in `e`.
    pub fn observe(&mut self, e: Encoding) -> Seen {
        match self.last.replace(e) {
            None => Seen::First(e),
            Some(prev) if prev == e => Seen::Same,
            Some(from) => Seen::Changed { from, to: e },
        }
    }

    /// The encoding of the last negative frame, if any was seen.
    pub fn last(&self) -> Option<Encoding> {
        self.last
    }

    /// Records a negative frame decoded in `e` and says in the log what it
    /// told about the sensor `who` (e.g. `dht22 on GPIO BCM 4`): once, which
    /// encoding `auto` detected; a warning whenever it changes. `frame`
    /// describes the frame for the message.
    pub fn note(&mut self, e: Encoding, setting: Negative, who: &str, frame: &dyn Fn() -> String) {
        match self.observe(e) {
            Seen::First(e) if setting == Negative::Auto => tracing::info!(
                "{who}: negative temperatures arrive as {} ({}); negative = \"auto\" \
                 detected it (set negative = \"{}\" to refuse the other encoding)",
                e.describe(),
                frame(),
                e.setting().name()
            ),
            Seen::Changed { from, to } => tracing::warn!(
                "{who}: a negative temperature arrived as {} ({}) after earlier ones \
                 as {}: a corrupted frame or a replaced sensor; once you know the sensor's \
                 encoding, set negative to it (\"{}\" for the earlier frames) to refuse the \
                 other",
                to.describe(),
                frame(),
                from.describe(),
                from.setting().name()
            ),
            Seen::First(_) | Seen::Same => {}
        }
    }
}

#[cfg(test)]
#[expect(clippy::float_cmp, reason = "decoding must be exact to the tenth")]
mod tests {
    use super::*;

    fn dht22(negative: Negative, word: u16) -> Result<Decoded, FrameError> {
        let [t1, t0] = word.to_be_bytes();
        decode(Model::Dht22, negative, [0x02, 0x0D, t1, t0])
    }

    fn sm(tenths: u16) -> u16 {
        0x8000 | tenths
    }

    fn tc(tenths: i16) -> u16 {
        u16::from_be_bytes((-tenths).to_be_bytes())
    }

    #[test]
    fn the_datasheet_example_decodes() {
        // 65.2 %RH, 35.1 °C -> 0x02 0x8C 0x01 0x5F.
        let d = decode(Model::Dht22, Negative::Auto, [0x02, 0x8C, 0x01, 0x5F]).unwrap();
        assert_eq!(d.sample, Sample::new(35.1, 65.2));
        assert_eq!(d.negative, None);
    }

    #[test]
    fn negative_temperatures_decode_in_both_encodings() {
        for (t, tenths) in [(-0.1, 1u16), (-10.0, 100), (-39.9, 399), (-40.0, 400)] {
            for (word, enc) in [
                (sm(tenths), Encoding::SignMagnitude),
                (tc(i16::try_from(tenths).unwrap()), Encoding::TwosComplement),
            ] {
                for negative in [Negative::Auto, enc.setting()] {
                    let d = dht22(negative, word).unwrap();
                    assert_eq!(d.sample.temperature, t, "{word:04X} {negative:?}");
                    assert_eq!(d.sample.humidity, 52.5);
                    assert_eq!(d.negative, Some(enc));
                }
            }
        }
    }

    #[test]
    fn the_range_edges_of_each_encoding() {
        // Sign-magnitude: 0x8000 (-0.0, read as 0.0) to 0x8190 (-40.0).
        assert_eq!(
            dht22(Negative::Auto, 0x8000).unwrap().sample.temperature,
            0.0
        );
        assert!(
            dht22(Negative::Auto, 0x8000)
                .unwrap()
                .sample
                .temperature
                .is_sign_positive()
        );
        assert_eq!(
            dht22(Negative::Auto, 0x8190).unwrap().sample.temperature,
            -40.0
        );
        // Two's complement: 0xFE70 (-40.0) to 0xFFFF (-0.1).
        assert_eq!(
            dht22(Negative::Auto, 0xFE70).unwrap().sample.temperature,
            -40.0
        );
        assert_eq!(
            dht22(Negative::Auto, 0xFFFF).unwrap().sample.temperature,
            -0.1
        );
        // One tenth beyond each edge is in neither.
        for word in [0x8191, 0xFE6F] {
            assert!(
                matches!(
                    dht22(Negative::Auto, word),
                    Err(FrameError::Implausible { .. })
                ),
                "{word:04X}"
            );
        }
    }

    /// Every word with the sign bit set: auto accepts exactly the words one
    /// encoding puts in range, each in that encoding, and nothing else.
    #[test]
    fn auto_decides_every_negative_word_without_overlap() {
        let mut accepted = 0;
        for word in 0x8000..=0xFFFFu16 {
            let sm_ok = word <= 0x8190;
            let tc_ok = word >= 0xFE70;
            assert!(!(sm_ok && tc_ok));
            match dht22(Negative::Auto, word) {
                Ok(d) => {
                    accepted += 1;
                    let want = if sm_ok {
                        Encoding::SignMagnitude
                    } else {
                        Encoding::TwosComplement
                    };
                    assert!(sm_ok || tc_ok, "{word:04X} accepted as {d:?}");
                    assert_eq!(d.negative, Some(want), "{word:04X}");
                    assert!((-40.0..=0.0).contains(&d.sample.temperature), "{d:?}");
                }
                Err(e) => {
                    assert!(!sm_ok && !tc_ok, "{word:04X} refused: {e}");
                    assert_eq!(e.kind(), ErrorKind::Range);
                }
            }
        }
        // 401 sign-magnitude words and 400 two's-complement ones.
        assert_eq!(accepted, 801);
    }

    #[test]
    fn a_forced_encoding_refuses_the_other_and_names_the_setting_that_fits() {
        let e = dht22(Negative::SignMagnitude, tc(100)).unwrap_err();
        assert_eq!(
            e,
            FrameError::Mismatch {
                word: 0xFF9C,
                forced: Encoding::SignMagnitude,
                value: -3266.8,
                other: -10.0,
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("0xFF9C")
                && msg.contains("-3266.8 °C with negative = \"sign-magnitude\"")
                && msg.contains("-10.0 °C with negative = \"twos-complement\""),
            "{msg}"
        );
        let e = dht22(Negative::TwosComplement, sm(399)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("-39.9 °C with negative = \"sign-magnitude\""),
            "{msg}"
        );
        assert_eq!(e.kind(), ErrorKind::Range);
        // A word neither decodes is refused as implausible, whatever is set.
        for negative in Negative::ALL {
            let e = dht22(negative, 0xC000).unwrap_err();
            assert!(matches!(e, FrameError::Implausible { .. }), "{e:?}");
            assert!(e.to_string().contains("either way"), "{e}");
        }
    }

    #[test]
    fn positive_words_are_the_same_in_every_setting() {
        for negative in Negative::ALL {
            let d = dht22(negative, 0x00E9).unwrap();
            assert_eq!(d.sample.temperature, 23.3);
            assert_eq!(d.negative, None);
        }
        // Out of range but positive: left to the range check, not guessed.
        assert_eq!(
            dht22(Negative::Auto, 0x7FFF).unwrap().sample.temperature,
            3276.7
        );
    }

    #[test]
    fn the_all_zero_frame_is_a_failed_read_for_both_models() {
        for model in [Model::Dht22, Model::Dht11] {
            let e = decode(model, Negative::Auto, [0; 4]).unwrap_err();
            assert_eq!(e, FrameError::AllZero);
            assert_eq!(e.kind(), ErrorKind::Checksum);
            assert!(e.to_string().contains("pull-up"), "{e}");
        }
        // Zero degrees at some humidity is a reading.
        let d = decode(Model::Dht22, Negative::Auto, [0x01, 0xF4, 0, 0]).unwrap();
        assert_eq!(d.sample, Sample::new(0.0, 50.0));
    }

    #[test]
    fn dht11_frames_with_and_without_tenths() {
        let d = |b| decode(Model::Dht11, Negative::Auto, b);
        // The original part: integers, zero tenths.
        assert_eq!(d([55, 0, 23, 0]).unwrap().sample, Sample::new(23.0, 55.0));
        // Newer parts: tenths, and a sign bit in the temperature's tenth.
        assert_eq!(d([55, 3, 23, 4]).unwrap().sample, Sample::new(23.4, 55.3));
        assert_eq!(d([60, 0, 2, 0x83]).unwrap().sample, Sample::new(-2.3, 60.0));
        let z = d([60, 0, 0, 0x80]).unwrap().sample.temperature;
        assert!(z == 0.0 && z.is_sign_positive());
        assert_eq!(d([55, 0, 23, 0]).unwrap().negative, None);
        // A DHT22 frame (55.5 %RH = 0x02 0x2B) read as a DHT11.
        let e = d([0x02, 0x2B, 0x00, 0xE9]).unwrap_err();
        assert_eq!(e, FrameError::NotDht11 { byte: 1, value: 43 });
        assert!(e.to_string().contains("kind = \"dht11\""), "{e}");
        assert_eq!(
            d([50, 0, 20, 0x8A]).unwrap_err(),
            FrameError::NotDht11 { byte: 3, value: 10 }
        );
    }

    #[test]
    fn the_tracker_reports_the_first_encoding_and_changes() {
        let mut t = EncodingTracker::default();
        assert_eq!(t.last(), None);
        assert_eq!(
            t.observe(Encoding::TwosComplement),
            Seen::First(Encoding::TwosComplement)
        );
        assert_eq!(t.observe(Encoding::TwosComplement), Seen::Same);
        assert_eq!(
            t.observe(Encoding::SignMagnitude),
            Seen::Changed {
                from: Encoding::TwosComplement,
                to: Encoding::SignMagnitude
            }
        );
        assert_eq!(t.last(), Some(Encoding::SignMagnitude));
    }

    /// The config's spelling (serde) and the messages' (`name`) agree.
    #[test]
    fn settings_parse_by_their_config_names() {
        #[derive(serde::Deserialize)]
        struct T {
            negative: Negative,
        }
        for n in Negative::ALL {
            let t: T = toml::from_str(&format!("negative = {:?}", n.name())).unwrap();
            assert_eq!(t.negative, n);
        }
        assert!(toml::from_str::<T>("negative = \"twos\"").is_err());
        assert_eq!(Negative::default(), Negative::Auto);
    }

    #[test]
    fn models_know_their_spacing_pulse_and_range() {
        assert_eq!(Model::Dht22.min_spacing(), Duration::from_secs(2));
        assert_eq!(Model::Dht11.min_spacing(), Duration::from_secs(1));
        assert_eq!(Model::Dht11.start_pulse(), Duration::from_millis(18));
        assert_eq!(Model::Dht11.range(), SensorRange::DHT11);
        assert_eq!(Model::Dht22.range(), SensorRange::DHT22);
    }
}
