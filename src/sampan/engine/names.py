"""Container names: validation and Docker-style generated names (adjective_surname)."""
from __future__ import annotations

import random
import re

VALID = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

_LEFT = """admiring adoring affectionate agitated amazing angry awesome beautiful blissful bold boring
brave busy charming clever compassionate competent condescending confident cool cranky crazy dazzling
determined distracted dreamy eager ecstatic elastic elated elegant eloquent epic exciting fervent
festive flamboyant focused friendly frosty funny gallant gifted goofy gracious great happy hardcore
heuristic hopeful hungry infallible inspiring intelligent interesting jolly jovial keen kind laughing
loving lucid magical modest musing mystifying naughty nervous nice nifty nostalgic objective optimistic
peaceful pedantic pensive practical priceless quirky quizzical recursing relaxed reverent romantic sad
serene sharp silly sleepy stoic strange stupefied suspicious sweet tender thirsty trusting unruffled
upbeat vibrant vigilant vigorous wizardly wonderful xenodochial youthful zealous zen""".split()
_RIGHT = """agnesi albattani allen almeida antonelli archimedes ardinghelli aryabhata austin babbage
banach banzai bardeen bartik bassi beaver bell benz bhabha bhaskara black blackburn blackwell bohr booth
borg bose bouman boyd brahmagupta brattain brown buck burnell cannon carson cartwright carver cerf
chandrasekhar chaplygin chatelet chatterjee chaum chebyshev clarke cohen colden cori cray curie curran
darwin davinci dewdney dhawan diffie dijkstra dirac driscoll dubinsky easley edison einstein elbakyan
elgamal elion ellis engelbart euclid euler faraday feistel fermat fermi feynman franklin gagarin galileo
galois ganguly gates gauss germain goldberg goldstine goldwasser golick goodall gould greider grothendieck
haibt hamilton haslett hawking heisenberg hellman hermann herschel hertz heyrovsky hodgkin hofstadter
hoover hopper hugle hypatia ishizaka jackson jang jemison jennings jepsen johnson joliot jones kalam
kapitsa kare keldysh keller kepler khayyam khorana kilby kirch knuth kowalevski lalande lamarr lamport
leakey leavitt lederberg lehmann lewin lichterman liskov lovelace lumiere mahavira margulis matsumoto
maxwell mayer mccarthy mcclintock mclaren mclean mcnulty meitner mendel mendeleev meninsky merkle
mestorf mirzakhani montalcini moore morse moser murdock napier nash neumann newton nightingale nobel
noether northcutt noyce panini pare pascal pasteur payne perlman pike poincare poitras proskuriakova
ptolemy raman ramanujan rhodes ride ritchie robinson roentgen rosalind rubin saha sammet sanderson
satoshi shamir shannon shaw shirley shockley shtern sinoussi snyder solomon spence stonebraker sutherland
swanson swartz swirles taussig tesla tharp thompson torvalds tu turing varahamihira vaughan villani
visvesvaraya volhard wescoff wilbur wiles williams williamson wilson wing wozniak wright wu yalow yonath
zhukovsky""".split()


def generate(taken: set[str], rng: random.Random | None = None) -> str:
    r = rng or random.SystemRandom()
    for attempt in range(100):
        name = f"{r.choice(_LEFT)}_{r.choice(_RIGHT)}"
        if name == "boring_wozniak":  # Steve Wozniak is not boring (as in Docker)
            continue
        if attempt >= 10:
            name += str(r.randint(0, 9))
        if name not in taken:
            return name
    raise RuntimeError("could not generate a unique container name")


def valid(name: str) -> bool:
    return bool(VALID.match(name))
