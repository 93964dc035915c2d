"""Tables: a damaged file is an error that names it."""

from __future__ import annotations

import pytest

from polyemo.io import read_table


@pytest.mark.parametrize("name, content", [("broken.parquet", b"PAR1 not really"), ("empty.csv", b""),
                                           ("latin.csv", b"utt_id,path\n\xff\xfe,\x80\n")])
def test_an_unreadable_table_names_its_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        read_table(path)
