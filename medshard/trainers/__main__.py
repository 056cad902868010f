"""`accelerate launch -m medshard.trainers CONFIG.yaml [key=value ...] [--folds K] [--resume]`."""

from medshard.trainers.cli import main

main()
