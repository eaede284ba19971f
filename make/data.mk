# Data targets (included by the Makefile): datasets under $(DATA_DIR), i.e. $$CRT_DATA_DIR or data/.
DATA_DIR ?= $(or $(CRT_DATA_DIR),data)
DATASETS ?= mnist cifar10 cifar100 tinyimagenet inat2019 arxiv
FEATURES ?= tinyimagenet inat2019 arxiv

.PHONY: prepare-data extract-features

prepare-data: ## download MNIST, CIFAR-10/100, Tiny ImageNet; print how to get iNat 2019 and arXiv (DATASETS=...)
	$(PY) scripts/prepare_data.py $(DATASETS) --data-dir $(DATA_DIR)

extract-features: ## ResNet-18 / Inception-V3 / SciBERT features for tinyimagenet, inat2019, arxiv (FEATURES=...)
	@for d in $(FEATURES); do $(PY) scripts/extract_features.py $$d --data-dir $(DATA_DIR) || exit 1; done

SCALE_DATA_DIR ?= outputs/scale-data
.PHONY: scale-data scale-probe

scale-data: install ## full-size STAND-INS (random content, marked) of cifar100, tinyimagenet, inat2019, arxiv in $(SCALE_DATA_DIR) (~3 GB, ~1 min)
	$(PY) scripts/make_scale_data.py --data-dir $(SCALE_DATA_DIR)

scale-probe: install ## Table 1 (ECRT-MP) end to end on the stand-ins, cut budget, CPU: time, steps, peak RSS -> outputs/scale-probe.md
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) scripts/scale_probe.py --data-dir $(SCALE_DATA_DIR) --write outputs/scale-probe.md $(ARGS)
