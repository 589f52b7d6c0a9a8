"""Write a checkpoint as a Hugging Face GPT-2 folder.

    numpygpt export out my-hf-model                   # out/'s best checkpoint
    numpygpt export out my-hf-model --checkpoint latest

The folder loads with GPT2LMHeadModel.from_pretrained and GPT2TokenizerFast.from_pretrained.
"""
from pathlib import Path

from ..formats import hf
from ..inference.loading import load_model
from ..progress import Progress
from .args import folder


def add_arguments(p):
    p.add_argument("out_dir", metavar="OUT_DIR", help="the training output directory (or a checkpoint folder)")
    p.add_argument("folder", type=folder, metavar="FOLDER",
                   help="where to write config.json, model.safetensors, vocab.json, merges.txt")
    p.add_argument("--checkpoint", metavar="WHICH", help="best, latest or step-N "
                   "(default: best when the run evaluated, else latest)")


def run(args):
    hf.check_export_folder(Path(args.folder))  # before the load: a refusal comes at once
    loaded = load_model(args.out_dir, args.checkpoint)
    say = Progress().message
    say(f"{args.prog}: loaded {loaded.description}")
    hf.export(loaded.model, args.folder, loaded.tokenizer_dir, loaded.tokenizer.eot_token)
    say(f"wrote {args.folder}: load it with GPT2LMHeadModel.from_pretrained({args.folder!r})")
