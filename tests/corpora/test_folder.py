import pytest

from polyemo.corpora import prepare, scan
from polyemo.corpora.base import RecipeError


def test_folder_labels_and_speaker_subfolders(make_tree):
    root = make_tree({
        "angry/spk1/a.wav": None,
        "angry/spk2/a.wav": None,
        "Happy/spk1/b.flac": None,
        "neutral/spk2/deeper/c.wav": None,
    })
    rows = scan("folder", root, corpus_name="mine", language="de")
    assert rows["utt_id"].tolist() == ["mine/Happy/spk1/b", "mine/angry/spk1/a", "mine/angry/spk2/a", "mine/neutral/spk2/deeper/c"]
    assert rows["label_raw"].tolist() == ["Happy", "angry", "angry", "neutral"]
    assert rows["label"].tolist() == ["happiness", "anger", "anger", "neutral"]
    assert rows["speaker"].tolist() == ["mine/spk1", "mine/spk1", "mine/spk2", "mine/spk2"]
    assert (rows["corpus"] == "mine").all() and (rows["language"] == "de").all()


def test_folder_speaker_pattern(make_tree):
    root = make_tree({"sad/s07_001.wav": None, "sad/s08_001.wav": None, "calm/s07_002.wav": None})
    rows = scan("folder", root, speaker_pattern=r"^(?P<speaker>s\d+)_")
    assert rows["speaker"].tolist() == ["folder/s07", "folder/s07", "folder/s08"]
    with pytest.raises(RecipeError, match=r"speaker_pattern .* does not match 's07_002.wav'"):
        scan("folder", root, speaker_pattern=r"^x(\d+)")


def test_folder_without_speakers_warns_and_keeps_files_apart(make_tree):
    root = make_tree({"fear/1.wav": None, "fear/2.wav": None})
    with pytest.warns(UserWarning, match="speaker-independent splits cannot be guaranteed"):
        rows = scan("folder", root)
    assert rows["speaker"].tolist() == ["folder/unknown-1", "folder/unknown-2"]


def test_folder_unknown_label_names_the_folder(make_tree):
    root = make_tree({"angry/a.wav": None, "confused/b.wav": None})
    with pytest.raises(RecipeError, match=r"confused: folder name is not an emotion label"):
        scan("folder", root, speaker_pattern="(.)")


def test_folder_prepare_hashes(make_tree, isolated_cache):
    root = make_tree({"angry/s1/a.wav": None, "sad/s2/b.ogg": None})
    manifest, failures = prepare("folder", root, show_progress=False)
    assert failures.empty and manifest["content_hash"].notna().all() and len(manifest) == 2
