"""Our TFDS dataset builders; importing this package registers them with TFDS.

- `proxy_scenes` (configs `default`, `tiny`): generated shapes scenes with labels, captions, VQA
  questions, class masks and depth maps, for offline proxy runs of every task.
- `proxy_digits`: scikit-learn's handwritten digits as a 32x32 image classification dataset.
- `vqav2`: the official VQAv2 files plus COCO images from a manual directory.
- `gqa`: the official GQA balanced questions and images from a manual directory.
- `ocrvqa`: OCR-VQA's dataset.json and the downloaded book covers from a manual directory.
- `ade20k`: ADE20k scene parsing (ADEChallengeData2016.zip, 150 classes) from a manual directory.
- `objectnet`: ObjectNet 1.0's folder release (its ImageNet-mapped classes, border cropped) from a manual
  directory.

Load them like any TFDS dataset once this package is imported, e.g.
`tfds.builder("proxy_scenes/tiny", data_dir=...)`. `CHECK_FILES` holds, per builder that reads a manual
folder, the check `harness prepare` runs before TFDS does: one line naming what is missing.
"""

from harness.data.builders import ade20k, gqa, objectnet, ocrvqa, vqav2
from harness.data.builders.ade20k import Ade20k
from harness.data.builders.gqa import Gqa
from harness.data.builders.objectnet import Objectnet
from harness.data.builders.ocrvqa import Ocrvqa
from harness.data.builders.proxy_digits import ProxyDigits
from harness.data.builders.proxy_scenes import ProxyScenes, ProxyScenesConfig
from harness.data.builders.vqav2 import Vqav2

CHECK_FILES = {"vqav2": vqav2.check_files, "gqa": gqa.check_files, "ocrvqa": ocrvqa.check_files,
               "objectnet": objectnet.check_files, "ade20k": ade20k.check_files}

__all__ = ["CHECK_FILES", "Ade20k", "Gqa", "Objectnet", "Ocrvqa", "ProxyDigits", "ProxyScenes", "ProxyScenesConfig",
           "Vqav2"]
