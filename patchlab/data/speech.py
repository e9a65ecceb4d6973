"""Labelled training audio in SAKURA's layout: espeak-ng and Festival speech, human recordings (KLettres,
KTuberling) for gender, GCompris animal sounds.

patchlab-mini trains on this, never on SAKURA (which stays for evaluation). Needs the Debian packages espeak-ng,
festival with its voices (festvox-kallpc16k, festvox-italp16k, festvox-itapc16k, festvox-czech-dita,
festvox-czech-machac, festvox-suopuhe-lj, festvox-suopuhe-mv), klettres-data, ktuberling-data and gcompris-qt-data.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import struct
import subprocess
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt
from tqdm.auto import tqdm

from ..errors import PatchlabError
from ..io import write_atomic
from .phonetic import TRACK as LETTER
from .phonetic import digest, is_held_out, letter_question, letter_recordings, training_languages
from .synth import HEADER, multiple_choice

RATE = 16000
LANGUAGES = {  # SAKURA label -> (espeak-ng voice, sentences)
    "English": (
        "en-us",
        [
            "The weather is lovely today.",
            "I am going to the market this afternoon.",
            "Could you please close the window?",
            "My brother plays football every weekend.",
            "We had a wonderful dinner with our friends.",
            "The train to the city leaves at nine.",
            "She reads a book before going to sleep.",
            "This coffee is too hot to drink.",
            "Our teacher told us a funny story.",
            "The children are playing in the garden.",
        ],
    ),
    "German": (
        "de",
        [
            "Das Wetter ist heute sehr schön.",
            "Ich gehe heute Nachmittag auf den Markt.",
            "Könnten Sie bitte das Fenster schließen?",
            "Mein Bruder spielt jedes Wochenende Fußball.",
            "Wir hatten ein wunderbares Abendessen mit Freunden.",
            "Der Zug in die Stadt fährt um neun Uhr.",
            "Sie liest ein Buch, bevor sie schlafen geht.",
            "Dieser Kaffee ist zu heiß zum Trinken.",
            "Unser Lehrer hat uns eine lustige Geschichte erzählt.",
            "Die Kinder spielen im Garten.",
        ],
    ),
    "Spanish": (
        "es",
        [
            "Hoy hace un tiempo estupendo.",
            "Esta tarde voy al mercado.",
            "¿Podría cerrar la ventana, por favor?",
            "Mi hermano juega al fútbol todos los fines de semana.",
            "Tuvimos una cena maravillosa con nuestros amigos.",
            "El tren a la ciudad sale a las nueve.",
            "Ella lee un libro antes de dormir.",
            "Este café está demasiado caliente.",
            "Nuestro profesor nos contó una historia divertida.",
            "Los niños juegan en el jardín.",
        ],
    ),
    "French": (
        "fr-fr",
        [
            "Il fait très beau aujourd'hui.",
            "Je vais au marché cet après-midi.",
            "Pourriez-vous fermer la fenêtre, s'il vous plaît ?",
            "Mon frère joue au football chaque week-end.",
            "Nous avons fait un excellent dîner avec nos amis.",
            "Le train pour la ville part à neuf heures.",
            "Elle lit un livre avant de dormir.",
            "Ce café est trop chaud pour être bu.",
            "Notre professeur nous a raconté une histoire drôle.",
            "Les enfants jouent dans le jardin.",
        ],
    ),
    "Italian": (
        "it",
        [
            "Oggi il tempo è bellissimo.",
            "Questo pomeriggio vado al mercato.",
            "Potrebbe chiudere la finestra, per favore?",
            "Mio fratello gioca a calcio ogni fine settimana.",
            "Abbiamo fatto una cena meravigliosa con gli amici.",
            "Il treno per la città parte alle nove.",
            "Lei legge un libro prima di dormire.",
            "Questo caffè è troppo caldo da bere.",
            "Il nostro insegnante ci ha raccontato una storia divertente.",
            "I bambini giocano in giardino.",
        ],
    ),
    "Japanese": (
        "ja",
        [
            "きょうは とても いい てんき です。",
            "ごご は いちば に いきます。",
            "まど を しめて ください。",
            "あに は まいしゅう サッカー を します。",
            "ともだち と すてきな ゆうしょく を たべました。",
            "まち へ の でんしゃ は くじ に でます。",
            "かのじょ は ねる まえに ほん を よみます。",
            "この コーヒー は あつすぎます。",
            "せんせい が おもしろい はなし を しました。",
            "こどもたち が にわ で あそんで います。",
        ],
    ),
    "Korean": (
        "ko",
        [
            "오늘은 날씨가 정말 좋습니다.",
            "오늘 오후에 시장에 갑니다.",
            "창문 좀 닫아 주시겠어요?",
            "우리 형은 주말마다 축구를 합니다.",
            "친구들과 멋진 저녁을 먹었습니다.",
            "시내로 가는 기차는 아홉 시에 떠납니다.",
            "그녀는 자기 전에 책을 읽습니다.",
            "이 커피는 너무 뜨겁습니다.",
            "선생님이 재미있는 이야기를 해 주셨습니다.",
            "아이들이 정원에서 놀고 있습니다.",
        ],
    ),
    "Chinese": (
        "cmn",
        [
            "今天天气非常好。",
            "我今天下午去市场。",
            "请你把窗户关上好吗？",
            "我哥哥每个周末都踢足球。",
            "我们和朋友吃了一顿很棒的晚饭。",
            "去城里的火车九点出发。",
            "她睡觉前看书。",
            "这杯咖啡太烫了。",
            "我们的老师给我们讲了一个有趣的故事。",
            "孩子们在花园里玩。",
        ],
    ),
}
ESPEAK_VARIANTS = {"female": ["f1", "f2", "f3", "f4", "f5"], "male": ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]}
# Festival voices label gender only: they exist for two of SAKURA's languages, so as language examples their
# (more natural) timbre would itself predict English/Italian. The HTS voice slt is left out for the same reason:
# the only natural-sounding voice is female. F0 checked: female 161-220 Hz, male 76-121 Hz.
FESTIVAL_VOICES = {  # voice -> (gender, language of its text, text encoding)
    "kal_diphone": ("male", "English", "latin-1"),
    "lp_diphone": ("female", "Italian", "latin-1"),
    "pc_diphone": ("male", "Italian", "latin-1"),
    "czech_dita": ("female", None, "iso-8859-2"),
    "czech_machac": ("male", None, "iso-8859-2"),
    "suo_fi_lj_diphone": ("female", None, "latin-1"),
    "hy_fi_mv_diphone": ("male", None, "latin-1"),
}
FESTIVAL_TEXT = {
    "czech_dita": ["Dnes je krásné počasí.", "Odpoledne půjdu na trh.", "Můj bratr hraje fotbal každý víkend."],
    "czech_machac": ["Dnes je krásné počasí.", "Odpoledne půjdu na trh.", "Můj bratr hraje fotbal každý víkend."],
    "suo_fi_lj_diphone": ["Tänään on kaunis sää.", "Menen iltapäivällä torille.", "Veljeni pelaa jalkapalloa."],
    "hy_fi_mv_diphone": ["Tänään on kaunis sää.", "Menen iltapäivällä torille.", "Veljeni pelaa jalkapalloa."],
}
ANIMALS = {  # SAKURA label -> sounds inside GCompris' Qt resources (rooster and crow have none there)
    "dog": [
        "explore_farm_animals/resource/animals/dog.ogg",
        "memory-sound/resource/LRBark_1_LA_cut.ogg",
        "memory-sound/resource/LRBark_3_LA_cut.ogg",
    ],
    "cat": ["explore_farm_animals/resource/animals/cat.ogg"],
    "cow": ["explore_farm_animals/resource/animals/cow.ogg"],
    "sheep": ["explore_farm_animals/resource/animals/sheep.ogg"],
    "pig": ["explore_farm_animals/resource/animals/pig.ogg"],
    "hen": ["explore_farm_animals/resource/animals/chickens.ogg"],
    "frog": ["memory-sound/resource/LRFrogsInPondDuringStormLACut.ogg"],
}
GCOMPRIS_RCC = Path("/usr/share/gcompris-qt/rcc")
# Human recordings of letters, syllables and words (KDE's KLettres and KTuberling), one directory per speaker and
# language. Used for gender only, labelled by the speaker's median F0: as language examples they exist for five of
# SAKURA's eight languages (one speaker each), so their natural timbre would itself predict a language.
HUMAN_SPEECH = (Path("/usr/share/klettres"), Path("/usr/share/ktuberling/sounds"))
F0_MALE, F0_FEMALE = (60.0, 150.0), (185.0, 320.0)  # Hz; recordings between (or outside) the two are not used
QUESTIONS = {
    "Gender": [
        "What is the speaker's gender in this audio?",
        "Identify the gender of the speaker.",
        "Is the voice in this clip female or male? Choose from the options.",
    ],
    "Language": [
        "Which language is spoken in this audio?",
        "Determine the language of the provided speech.",
        "Listen to the speaker and select the language they are using.",
    ],
    "Animal": [
        "Which animal makes the sound in this audio?",
        "Identify the animal you hear in the recording.",
        "Which of these animals most likely produced this sound?",
    ],
}


@dataclass
class Clip:
    audio: np.ndarray
    labels: dict[str, str]  # track -> label
    source: str


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise PatchlabError(f"{tool} is not installed", f"install the Debian package: apt-get install {package}")


def _read(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(1)
    return resample_poly(x, RATE, sr).astype(np.float32) if sr != RATE else x


def espeak(text: str, voice: str, pitch: int, speed: int) -> np.ndarray:
    """One utterance from espeak-ng (voice like 'de+f3'), at 16 kHz."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", f.name, text],
            check=True,
            capture_output=True,
        )
        return _read(Path(f.name))


def installed_festival_voices() -> set[str]:
    """Festival voices on this machine (each a folder under Festival's voices/<language>/)."""
    return {p.name for p in Path("/usr/share/festival/voices").glob("*/*") if p.is_dir()}


def festival(text: str, voice: str, encoding: str) -> np.ndarray:
    """One utterance from a Festival voice (text2wave), at 16 kHz."""
    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d) / "in.txt", Path(d) / "out.wav"
        src.write_bytes(text.encode(encoding, errors="replace"))
        subprocess.run(
            ["text2wave", "-eval", f"(voice_{voice})", "-o", str(out), str(src)], check=True, capture_output=True
        )
        return _read(out)


def rcc_files(path: Path) -> dict[str, bytes]:
    """Files inside a Qt binary resource (.rcc): Qt's tree of names, flags and (zlib-compressed) data."""
    b = path.read_bytes()
    if b[:4] != b"qres":
        raise PatchlabError(f"{path} is not a Qt resource file", "reinstall gcompris-qt-data")
    version, tree, data, names = struct.unpack(">IIII", b[4:20])
    node = 22 if version >= 2 else 14
    out: dict[str, bytes] = {}

    def name(off: int) -> str:
        (n,) = struct.unpack(">H", b[names + off : names + off + 2])
        return b[names + off + 6 : names + off + 6 + 2 * n].decode("utf-16-be")

    def walk(i: int, prefix: str) -> None:
        p = tree + i * node
        noff, flags = struct.unpack(">IH", b[p : p + 6])
        here = prefix + (name(noff) if i else "")
        if flags & 2:  # directory
            count, first = struct.unpack(">II", b[p + 6 : p + 14])
            for c in range(first, first + count):
                walk(c, here + "/")
            return
        (doff,) = struct.unpack(">I", b[p + 10 : p + 14])
        (size,) = struct.unpack(">I", b[data + doff : data + doff + 4])
        raw = b[data + doff + 4 : data + doff + 4 + size]
        out[here] = zlib.decompress(raw[4:]) if flags & 1 else raw

    walk(0, "")
    return out


def animal_sounds() -> dict[str, list[np.ndarray]]:
    """GCompris' animal recordings for the SAKURA labels it has, at 16 kHz."""
    out: dict[str, list[np.ndarray]] = {}
    cache: dict[str, dict[str, bytes]] = {}
    for label, files in ANIMALS.items():
        for f in files:
            activity = f.split("/")[0]
            rcc = GCOMPRIS_RCC / f"{activity}.rcc"
            if not rcc.exists():
                raise PatchlabError(f"{rcc} not found", "install the Debian package: apt-get install gcompris-qt-data")
            cache.setdefault(activity, rcc_files(rcc))
            raw = cache[activity][f"/gcompris/src/activities/{f}"]
            with tempfile.NamedTemporaryFile(suffix=".ogg") as tmp:
                tmp.write(raw)
                tmp.flush()
                out.setdefault(label, []).append(_read(Path(tmp.name)))
    return out


def augment(x: np.ndarray, rng: np.random.Generator, max_seconds: float = 8.0) -> np.ndarray:
    """Random crop, speed (resampling, so pitch too, within +-8%), band limits (a microphone's), room reverberation,
    gain and background noise at 5-35 dB SNR: so the projector cannot key on the synthesizers' clean timbre."""
    n = int(max_seconds * RATE)
    if len(x) > n:
        start = rng.integers(0, len(x) - n)
        x = x[start : start + n]
    factor = rng.uniform(0.92, 1.08)
    x = resample_poly(x, 100, int(round(100 * factor))).astype(np.float32)
    low, high = rng.uniform(60, 300), rng.uniform(3400, 7800)
    x = sosfilt(butter(4, [low, high], btype="bandpass", fs=RATE, output="sos"), x).astype(np.float32)
    if rng.random() < 0.6:  # exponentially decaying noise as a room impulse response (RT60 0.1-0.6 s)
        rt60 = rng.uniform(0.1, 0.6)
        t = np.arange(int(rt60 * RATE)) / RATE
        ir = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60)
        ir[0] = 1.0 / rng.uniform(0.05, 0.3)
        x = fftconvolve(x, ir)[: len(x)].astype(np.float32)
    x = x / (np.abs(x).max() + 1e-8) * rng.uniform(0.3, 0.9)
    snr = rng.uniform(5, 35)
    noise = rng.standard_normal(len(x)).astype(np.float32) * np.sqrt((x**2).mean() / 10 ** (snr / 10))
    return np.clip(x + noise, -1, 1).astype(np.float32)


def median_f0(x: np.ndarray, rate: int = RATE) -> float:
    """Median F0 (Hz) over voiced 40 ms frames by autocorrelation (60-400 Hz); NaN when under 4 frames are voiced."""
    frame = int(0.04 * rate)
    if len(x) < 2 * frame:
        return float("nan")
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[:: frame // 2] * np.hanning(frame)
    frames = frames[np.sqrt((frames**2).mean(1)) >= 0.02 * np.abs(x).max()]
    spec = np.fft.rfft(frames, 2 * frame)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:, :frame]
    lo, hi = rate // 400, rate // 60
    lag = lo + ac[:, lo:hi].argmax(1)
    voiced = ac[np.arange(len(lag)), lag] > 0.4 * ac[:, 0]
    return float(np.median(rate / lag[voiced])) if voiced.sum() >= 4 else float("nan")


def human_speech_by_speaker() -> dict[tuple[str, str], list[tuple[np.ndarray, str]]]:
    """KLettres/KTuberling recordings (with their digests) grouped by (speaker directory, gender from F0); groups
    under 5 dropped, and the Letter track's test speakers never read (`phonetic.held_out`)."""
    groups: dict[tuple[str, str], list[tuple[np.ndarray, str]]] = {}
    files = sorted(f for root in HUMAN_SPEECH if root.exists() for f in root.rglob("*.ogg") if not is_held_out(f))
    for f in tqdm(files, desc="reading human recordings", leave=False):
        if "@" in f.parent.name:  # KTuberling's Serbian script variants repeat the sr recordings
            continue
        x = _read(f)
        f0 = median_f0(x)
        gender = "male" if F0_MALE[0] < f0 < F0_MALE[1] else "female" if F0_FEMALE[0] < f0 < F0_FEMALE[1] else None
        if gender:
            groups.setdefault((str(f.parent), gender), []).append((x, digest(f)))
    return {k: v for k, v in groups.items() if len(v) >= 5}


def human_clips(per_gender: int, rng: np.random.Generator) -> list[Clip]:
    """Gender clips of 4-9 recordings of one speaker (pauses between), augmented: real voices, dozens of speakers."""
    groups = human_speech_by_speaker()
    clips = []
    for gender in ("female", "male"):
        keys = sorted(k for k in groups if k[1] == gender)
        for _ in range(per_gender if keys else 0):
            key = keys[rng.integers(len(keys))]
            parts, used = [], []
            for j in rng.choice(len(groups[key]), size=int(rng.integers(4, 10))):
                parts += [groups[key][j][0], np.zeros(int(rng.uniform(0.05, 0.3) * RATE), np.float32)]
                used.append(groups[key][j][1])
            source = f"human {key[0]} sha1:{','.join(used)}"
            clips.append(Clip(augment(np.concatenate(parts), rng), {"Gender": gender}, source))
    return clips


def letter_clips(per_letter: int, rng: np.random.Generator, human_copies: int = 2) -> list[Clip]:
    """Letter clips for training: `human_copies` augmented copies of every KLettres letter of the languages not held
    out (human voices, 7 speakers), and `per_letter` espeak-ng letter names per letter (varied language, voice,
    pitch and rate: synthetic variety). No test speaker's recording is read."""
    _require("espeak-ng", "espeak-ng")
    clips = []
    for r in letter_recordings(training_languages()):
        x = _read(r.path)
        for _ in range(human_copies):
            pad = [np.zeros(int(rng.uniform(0.05, 0.5) * RATE), np.float32) for _ in range(2)]
            audio = augment(np.concatenate([pad[0], x, pad[1]]), rng)
            clips.append(Clip(audio, {LETTER: r.letter}, f"klettres {r.path.parent} sha1:{digest(r.path)}"))
    voices = ["en-us", "en", "en-us", "en", "de", "fr", "es", "it", "nl", "pt-br"]  # English names twice as often
    for letter in "abcdefghijklmnopqrstuvwxyz":
        for i in range(per_letter):
            gender = "female" if i % 2 == 0 else "male"
            voice = f"{voices[rng.integers(len(voices))]}+{rng.choice(ESPEAK_VARIANTS[gender])}"
            pitch, speed = int(rng.integers(35, 75)), int(rng.integers(110, 190))
            audio = augment(espeak(letter.upper(), voice, pitch, speed), rng)
            clips.append(Clip(audio, {LETTER: letter}, f"espeak-ng {voice} p{pitch} s{speed}"))
    return clips


def pseudo_sentence(sentences: list[str], rng: np.random.Generator) -> str:
    """6-12 words (Chinese: characters) drawn from a language's sentences: more phonetic variety than the
    sentences themselves, so the projector learns the language's sound, not ten memorized utterances."""
    text = " ".join(sentences)
    units = [c for c in text if c.strip() and c not in "。，？！"] if "。" in text else text.split()
    return ("" if "。" in text else " ").join(rng.choice(units, size=int(rng.integers(6, 13))))


def speech_clips(per_language: int, rng: np.random.Generator) -> list[Clip]:
    """espeak-ng in SAKURA's 8 languages (varied voice variant, pitch and rate) labelled with language, a quarter
    of them also with gender; Festival's diphone voices (concatenated recordings of real speakers, female and
    male) labelled with gender, three times as many per voice, so gender is learned mostly from human voices."""
    _require("espeak-ng", "espeak-ng")
    clips = []
    for language, (voice, sentences) in LANGUAGES.items():
        for i in range(per_language):
            gender = "female" if i % 2 == 0 else "male"
            variant = rng.choice(ESPEAK_VARIANTS[gender])
            pitch = int(rng.integers(35, 75))
            speed = int(rng.integers(130, 190))
            text = pseudo_sentence(sentences, rng) if i % 2 else " ".join(rng.choice(sentences, 2, replace=False))
            audio = espeak(text, f"{voice}+{variant}", pitch, speed)
            labels = {"Language": language} | ({"Gender": gender} if i % 4 < 2 else {})
            clips.append(Clip(augment(audio, rng), labels, f"espeak-ng {voice}+{variant} p{pitch} s{speed}"))
    if shutil.which("text2wave"):
        missing = sorted(set(FESTIVAL_VOICES) - installed_festival_voices())
        if missing:
            warnings.warn(
                f"Festival voices not installed, left out: {missing} (see the Makefile's SYSDEPS)", stacklevel=2
            )
        for voice, (gender, language, encoding) in FESTIVAL_VOICES.items():
            if voice in missing:
                continue
            texts = LANGUAGES[language][1] if language else FESTIVAL_TEXT[voice]
            for _ in range(max(3, per_language * 3 // 4)):
                text = " ".join(rng.choice(texts, size=min(2, len(texts)), replace=False))
                audio = augment(festival(text, voice, encoding), rng)
                clips.append(Clip(audio, {"Gender": gender}, f"festival {voice}"))
    return clips


def animal_clips(per_label: int, rng: np.random.Generator) -> list[Clip]:
    """Augmented copies (crop, speed, gain, noise) of GCompris' animal recordings."""
    clips = []
    for label, sounds in animal_sounds().items():
        for i in range(per_label):
            clips.append(Clip(augment(sounds[i % len(sounds)], rng, 6.0), {"Animal": label}, f"gcompris {label}"))
    return clips


def _question(track: str, label: str, labels: list[str], rng: np.random.Generator) -> tuple[str, str]:
    """A SAKURA-style single-hop question with up to 4 shuffled options, and its '(x) Option' answer."""
    foils = [x for x in labels if x != label]
    options = [label, *rng.choice(foils, size=min(3, len(foils)), replace=False)]
    rng.shuffle(options)
    return multiple_choice(str(rng.choice(QUESTIONS[track])), options, label)


def build_training_set(
    out: str | Path,
    per_language: int = 40,
    per_animal: int = 24,
    seed: int = 0,
    per_gender: int = 0,
    per_letter: int = 0,
) -> Path:
    """Write Gender/, Language/, Animal/ (and Letter/) tracks in SAKURA's layout under `out` (same seed -> same
    audio); `per_gender` clips of human recordings per gender join the Gender track where KLettres/KTuberling are
    installed; `per_letter` > 0 adds the Letter track (`letter_clips`). SOURCES.tsv names every clip's source."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    with tqdm(total=2, desc="synthesizing training audio") as bar:
        clips = speech_clips(per_language, rng)
        if per_gender and any(root.exists() for root in HUMAN_SPEECH):
            clips += human_clips(per_gender, rng)
        elif per_gender:
            warnings.warn("no human recordings (apt-get install klettres-data ktuberling-data)", stacklevel=2)
        bar.update()
        if per_letter:
            clips += letter_clips(per_letter, rng)
        if GCOMPRIS_RCC.exists():
            clips += animal_clips(per_animal, rng)
        else:
            warnings.warn(f"{GCOMPRIS_RCC} not found: no Animal track (apt-get install gcompris-qt-data)", stacklevel=2)
        bar.update()
    all_labels = {t: sorted({c.labels[t] for c in clips if t in c.labels}) for t in QUESTIONS}
    rows: dict[str, list[list[str]]] = {t: [] for t in [*QUESTIONS, LETTER]}
    sources = []
    for clip in clips:
        digest = hashlib.sha1(clip.audio.tobytes()).hexdigest()[:12]
        for track, label in clip.labels.items():
            name = f"{label}_{digest}.flac"
            (out / track / "audio").mkdir(parents=True, exist_ok=True)
            sf.write(out / track / "audio" / name, clip.audio, RATE)
            q, a = letter_question(label, rng) if track == LETTER else _question(track, label, all_labels[track], rng)
            rows[track].append([name, label, q, a, "-", "-"])
        sources.append(f"{digest}\t{clip.source}\t{clip.labels}")
    for track, track_rows in rows.items():
        if not track_rows:
            continue
        buf = [HEADER.split(",")] + track_rows
        s = io.StringIO()
        csv.writer(s).writerows(buf)
        write_atomic(out / track / "metadata.csv", s.getvalue())
    write_atomic(out / "SOURCES.tsv", "\n".join(sources) + "\n")
    return out
