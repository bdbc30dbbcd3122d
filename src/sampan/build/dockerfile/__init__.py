"""The Dockerfile language: parser.py reads the text into instructions, shell.py substitutes
variables, commands.py types and validates each instruction, stages.py groups them by FROM."""
from sampan.build.dockerfile.parser import Dockerfile, Heredoc, Instruction, parse
from sampan.build.dockerfile.shell import DockerfileError, expand, expand_words

__all__ = ["Dockerfile", "DockerfileError", "Heredoc", "Instruction", "expand", "expand_words", "parse"]
