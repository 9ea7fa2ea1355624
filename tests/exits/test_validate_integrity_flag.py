"""exits.validate opens the cache with the integrity check on, unless --skip-integrity-check (issue 13)."""
from __future__ import annotations

import numpy as np
import pytest

from data_cache import CacheFormatError, save_cache
from data_cache import format as fmt
from data_cache.synthetic import make_synthetic_cache
from exits.validate import _parser
from exits.validation_inputs import open_searched_cache


def test_flag_reachesopen_searched_cache(tmp_path):
    save_cache(tmp_path / "c", make_synthetic_cache(60, 2, seed=1))
    labels = np.array(np.load(tmp_path / "c" / "holdout" / fmt.LABELS))
    labels[0] = (labels[0] + 1) % 10
    np.save(tmp_path / "c" / "holdout" / fmt.LABELS, labels)
    args = _parser().parse_args(["--config", "f.json", "--checkpoint", "c.pt", "--report", "r.json",
                                 "--skip-integrity-check"])
    assert args.skip_integrity_check
    with pytest.raises(CacheFormatError, match="holdout/labels.npy: sha256: checksum mismatch"):
        open_searched_cache(str(tmp_path / "c"), None)
    assert open_searched_cache(str(tmp_path / "c"), None, skip_integrity_check=True).n_samples("holdout") == 30
