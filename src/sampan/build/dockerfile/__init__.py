"""The Dockerfile language: parser.py reads the text into instructions, shell.py substitutes
variables, commands.py types and validates each instruction, stages.py groups them by FROM."""
from sampan.build.dockerfile.commands import command
from sampan.build.dockerfile.parser import Dockerfile, Heredoc, Instruction, parse
from sampan.build.dockerfile.shell import DockerfileError, expand, expand_words
from sampan.build.dockerfile.stages import Stage, meta_env, needed, stages

__all__ = ["Dockerfile", "DockerfileError", "Heredoc", "Instruction", "Stage", "command", "expand",
           "expand_words", "meta_env", "needed", "parse", "stages"]
