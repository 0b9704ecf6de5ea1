"""Datasets: the registry of what the harness knows about each dataset, and the pipeline that reads them.

- `registry`: `DatasetInfo` / `DATASETS` (TFDS names, split roles, what preparing reads, feature keys);
  no data is read and TensorFlow is not imported there.
- `prepared`: `is_prepared`, `require_prepared`, `skip_unprepared`, and `prepare` (`harness prepare`: every
  dataset, through TFDS's library call, its sources checked first).
- `pipeline`: `iterate` (TFDS -> tf.data -> numpy batches), `num_examples`, `example_ids` (TFDS ids),
  `class_names`, `class_subset`.
- `pp`: pp strings (big_vision's ops); `tokenizer`: sentencepiece; `builders`: our TFDS builders.

TensorFlow (`harness.tf_import`) and TFDS are imported on first use by `prepared`, `pipeline` and the pp ops,
not when this package is imported: every task module imports it, and `harness ls tasks` and the report read the
task modules.
"""

from harness.data.pipeline import (
    DEFAULT_SHUFFLE_BUFFER,
    class_names,
    class_subset,
    eval_num_batches,
    example_ids,
    iterate,
    label_is_set,
    num_classes,
    num_examples,
)
from harness.data.prepared import is_prepared, prepare, require_prepared, skip_unprepared
from harness.data.registry import (
    DATA_DIR_ENV,
    DATASETS,
    FEWSHOT_DATASETS,
    GENERATED,
    PAPER_DATASET_ORDER,
    SUBSET_IN_BUILD,
    DatasetInfo,
    DepthFeatures,
    Download,
    SegmentationFeatures,
    Sources,
    VqaFeatures,
    base_name,
    default_data_dir,
    default_manual_dir,
    get_info,
)

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DEFAULT_SHUFFLE_BUFFER",
    "FEWSHOT_DATASETS",
    "GENERATED",
    "PAPER_DATASET_ORDER",
    "SUBSET_IN_BUILD",
    "DatasetInfo",
    "DepthFeatures",
    "Download",
    "SegmentationFeatures",
    "Sources",
    "VqaFeatures",
    "base_name",
    "class_names",
    "class_subset",
    "default_data_dir",
    "default_manual_dir",
    "eval_num_batches",
    "example_ids",
    "get_info",
    "is_prepared",
    "iterate",
    "label_is_set",
    "num_classes",
    "num_examples",
    "prepare",
    "require_prepared",
    "skip_unprepared",
]
