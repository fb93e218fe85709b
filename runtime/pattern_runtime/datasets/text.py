"""Deterministic generator of the labelled topic-classification text set (sports, technology,
food, weather), built from templates and word lists with a seeded RNG.

Used to train the text classifier head and, later, to seed a data store. A few templates per
topic mention another topic's words, so the task is not purely keyword matching.
"""
from __future__ import annotations

import random
import re

TOPICS = ("sports", "technology", "food", "weather")
PER_TOPIC = 200

# Slots shared by all topics: they carry no topic signal.
SHARED = {
    "person": "Maria, James, Aisha, Tom, Priya, Lucas, Chen, Fatima, Oliver, Sofia, Daniel, Yuki, Omar, Emma, "
              "Noah, Ingrid, Carlos, Hannah, Kwame, Elena, Ravi, Grace, Mateo, Leila, Sam, Nadia, Ben, Zoe, "
              "Ahmed, my neighbour",
    "time": "yesterday, last weekend, this morning, on Friday night, last night, earlier today, on Sunday, "
            "this afternoon, two days ago, last month, over the holidays, on Tuesday, at dawn, late at night, "
            "during lunch, after work, this week, last season, on Saturday, before breakfast, all week, "
            "at noon, in the evening, last summer, on Monday, this spring, in winter, recently, today, tonight",
    "place": "London, Toronto, Nairobi, Madrid, Sydney, Mumbai, Chicago, Berlin, Lagos, Lisbon, Osaka, "
             "Denver, Cairo, Dublin, Seoul, Lima, Oslo, Austin, Manila, Prague, Cape Town, Glasgow, Boston, "
             "Hanoi, Vienna, Auckland, Montreal, Naples, Leeds, Santiago",
    "opinion": "amazing, disappointing, surprising, a bit strange, exciting, frustrating, impressive, "
               "unforgettable, overrated, fantastic, worrying, hilarious, boring, remarkable, unexpected, "
               "wonderful, terrible, brilliant, odd, inspiring, annoying, memorable, dull, incredible, "
               "shocking, pleasant, confusing, lovely, awful, superb",
}

# Per topic: `thing` (noun phrase), `happening` (clause), `detail` (noun phrase).
SLOTS = {
    "sports": {
        "thing": "the football match, the tennis final, the basketball game, the marathon, the cricket test, "
                 "the rugby derby, the cycling race, the swimming relay, the boxing bout, the golf tournament, "
                 "the hockey playoff, the baseball series, the volleyball semifinal, the ski jump, the Grand Prix, "
                 "the wrestling card, the rowing regatta, the handball league, the sprint final, the chess olympiad, "
                 "the table tennis open, the badminton doubles, the surfing contest, the triathlon, the derby, "
                 "the world cup qualifier, the penalty shootout, the title decider, the league opener, the relay",
        "happening": "the striker scored twice, the goalkeeper saved a penalty, the underdogs won in extra time, "
                     "the captain was sent off, the coach was sacked, the team clinched the title, "
                     "the referee disallowed a goal, the pitcher threw a no-hitter, the champion retired, "
                     "the rookie broke a record, the defender scored an own goal, the fans invaded the pitch, "
                     "the runner collapsed near the finish, the club signed a new winger, the home side was relegated, "
                     "the veteran won a fifth medal, the match went to a tie-break, the sprinter false-started, "
                     "the quarterback threw four touchdowns, the midfielder tore a ligament, "
                     "the visitors came back from three goals down, "
                     "the umpire reviewed the catch, the batter hit a century, the cyclist crashed on the descent, "
                     "the swimmer set a world record, the boxer was knocked out, the golfer made a hole in one, "
                     "the team lost on penalties, the league suspended the manager, the crowd booed the substitution",
        "detail": "the transfer fee, the league table, the final whistle, the starting lineup, the injury list, "
                  "the offside rule, the season tickets, the training camp, the half-time score, the squad rotation, "
                  "the playoff bracket, the scoring record, the new stadium, the away kit, the match ball, "
                  "the penalty area, the doping test, the draft pick, the relegation battle, the yellow card, "
                  "the free kick, the overtime period, the coaching staff, the fitness test, the medal count, "
                  "the world ranking, the home crowd, the scoreboard, the championship trophy, the warm-up",
    },
    "technology": {
        "thing": "the new smartphone, the laptop update, the graphics card, the cloud platform, "
                 "the open-source library, "
                 "the chatbot, the smartwatch, the gaming console, the operating system, the web browser, "
                 "the database server, the electric car software, the VR headset, the password manager, "
                 "the mobile app, the data centre, the quantum computer, the 5G network, the search engine, "
                 "the programming language, the wireless earbuds, the home router, the tablet, the compiler, "
                 "the AI model, the streaming service, the smart speaker, the drone, the chip factory, the firmware",
        "happening": "the company released a security patch, the servers went down for hours, "
                     "the battery drained overnight, "
                     "the update bricked older devices, the startup raised new funding, hackers leaked user passwords, "
                     "the processor ran twice as fast, the app crashed on launch, the developers fixed a memory leak, "
                     "the firm recalled faulty chargers, the engineers shipped a beta build, "
                     "the website was hit by a cyberattack, "
                     "the code was open-sourced, the screen cracked after a week, "
                     "the download stalled at ninety percent, "
                     "the algorithm was retrained, the chipmaker announced a smaller transistor, "
                     "the robot learned to sort parcels, "
                     "the network outage hit millions of users, the keyboard stopped responding, "
                     "the software license changed, "
                     "the encryption was broken, the cloud bill doubled, the API was deprecated, "
                     "the prototype overheated, "
                     "the camera sensor was upgraded, the backup failed silently, the bug bounty paid out, "
                     "the regulator fined the tech giant, the smartphone sales slumped",
        "detail": "the battery life, the processor, the memory chip, the touchscreen, the source code, "
                  "the user interface, "
                  "the privacy settings, the cloud storage, the bandwidth, the firmware version, the cooling fan, "
                  "the neural network, the login page, the charging cable, the pixel density, the software bug, "
                  "the server logs, the hard drive, the kernel, the app store, the encryption key, the Wi-Fi signal, "
                  "the circuit board, the machine learning pipeline, the developer kit, the release notes, "
                  "the product launch, the silicon wafer, the voice assistant, the data breach",
    },
    "food": {
        "thing": "the lasagne, the sushi platter, the sourdough bread, the chicken curry, the chocolate cake, "
                 "the vegetable soup, the beef stew, the pad thai, the apple pie, the ramen, the paella, "
                 "the tacos, the mushroom risotto, the pancakes, the falafel wrap, the lemon tart, the dumplings, "
                 "the roast lamb, the banana bread, the Caesar salad, the pepperoni pizza, the fish and chips, "
                 "the lentil dal, the cheesecake, the omelette, the jollof rice, the pho, the croissants, "
                 "the barbecue ribs, the strawberry jam",
        "happening": "the chef added too much salt, the sauce burned on the stove, the dough failed to rise, "
                     "the bakery sold out of bread, the restaurant changed its menu, "
                     "the recipe called for fresh basil, "
                     "the waiter recommended the house wine, the soup needed more garlic, "
                     "the cake collapsed in the oven, "
                     "the market ran out of ripe avocados, the critic praised the dessert, "
                     "the noodles were overcooked, "
                     "the kitchen smelled of cinnamon, the cheese was aged for two years, the grill was too hot, "
                     "the dinner party ran late, the spices came from a family shop, the stew simmered for hours, "
                     "the café started roasting its own coffee, the vegetables were picked that morning, "
                     "the pastry turned out flaky, the brunch queue went round the block, "
                     "the meat was marinated overnight, "
                     "the cook forgot the eggs, the food truck won an award, the pasta was made by hand, "
                     "the tea was brewed too strong, the butcher recommended a cheaper cut, "
                     "the salad was drowned in dressing, "
                     "the fridge broke and the milk went sour",
        "detail": "the olive oil, the fresh herbs, the cooking time, the secret ingredient, the spice blend, "
                  "the portion size, the dessert menu, the frying pan, the oven temperature, the chopped onions, "
                  "the tasting menu, the dinner reservation, the grocery bill, the vegan option, the melted butter, "
                  "the sea salt, the recipe book, the sticky rice, the whipped cream, the garlic bread, "
                  "the kitchen knife, the slow cooker, the farmers market, the bread flour, the dipping sauce, "
                  "the black pepper, the cutting board, the wine pairing, the breakfast buffet, the crispy skin",
    },
    "weather": {
        "thing": "the heavy rain, the heatwave, the snowstorm, the thick fog, the thunderstorm, the strong wind, "
                 "the hail, the cold snap, the drizzle, the drought, the hurricane, the blizzard, the frost, "
                 "the humidity, the tornado warning, the flash flood, the sleet, the monsoon, the sunshine, "
                 "the gale, the freezing rain, the dust storm, the morning mist, the black ice, the cloudburst, "
                 "the tropical storm, the autumn chill, the dry spell, the storm surge, the typhoon",
        "happening": "the temperature dropped below freezing, the river burst its banks, "
                     "the forecast promised clear skies, "
                     "the wind knocked down power lines, the roads were covered in ice, the sky turned dark by noon, "
                     "the rain did not stop for three days, the snow piled up against the door, "
                     "the sun finally came out, "
                     "the lightning struck a tall tree, the forecasters issued an amber warning, "
                     "the humidity made everything sticky, "
                     "the fog delayed flights, the clouds cleared after lunch, the thermometer hit forty degrees, "
                     "the storm brought down branches, the frost covered the windscreens, "
                     "the pressure dropped sharply, "
                     "the gusts reached ninety kilometres an hour, the drizzle turned into a downpour, "
                     "the meteorologists tracked the cyclone, the drought dried up the reservoir, "
                     "the hail dented cars, "
                     "the coast was battered by waves, the first snow of the season fell, the air felt damp and cold, "
                     "the heat broke records, the rainbow appeared after the shower, "
                     "the wind chill made it feel colder, "
                     "the ice storm closed schools",
        "detail": "the weather forecast, the rain gauge, the wind speed, the barometer, the satellite images, "
                  "the UV index, the dew point, the weather warning, the rainfall total, the cold front, "
                  "the high pressure system, the temperature chart, the snow depth, the storm track, the flood alert, "
                  "the heat index, the cloud cover, the seasonal outlook, the weather radar, the pollen count, "
                  "the air pressure, the frost warning, the sea temperature, the wind direction, the umbrella, "
                  "the weather station, the thermometer, the climate report, the overnight low, the visibility",
    },
}

# {TOPIC.SLOT} draws from another topic's slot.
TOPIC_TEMPLATES = {
    "sports": [
        "In {place}, {happening} {time}.",
        "{person} said {thing} was {opinion} because {happening}.",
        "Everyone is talking about {thing} after {happening}.",
        "{time}, {happening} at {thing} in {place}.",
        "Commentators argued about {detail} after {thing}.",
        "I watched {thing} with {person} {time} and {happening}.",
        "The pundits think {detail} decided {thing}.",
        "Tickets for {thing} in {place} sold out within minutes.",
        "{person} could not believe that {happening}.",
        "Fans in {place} are still angry about {detail}.",
        "{thing} was postponed {time} because of {weather.thing}.",
        "Despite {weather.thing}, {happening}.",
        "The highlights of {thing} showed how {happening}.",
        "After {thing}, the manager blamed {detail}.",
        "{person} bet on {thing} and lost when {happening}.",
        "{time}, sports radio kept discussing {detail}.",
        "Fans ate {food.thing} while watching {thing}.",
        "Who expected that {happening} at {thing}?",
    ],
    "technology": [
        "In {place}, {happening} {time}.",
        "{person} said {thing} was {opinion} because {happening}.",
        "Reviewers complained about {detail} on {thing}.",
        "{time}, {happening}, and users of {thing} noticed.",
        "The engineers in {place} are rewriting {detail}.",
        "I set up {thing} for {person} {time}, but {happening}.",
        "A blog post explained why {detail} matters for {thing}.",
        "The launch event for {thing} in {place} was streamed online.",
        "{person} could not believe that {happening}.",
        "Developers are debating {detail} after {happening}.",
        "{person} used {thing} to check {weather.detail}.",
        "A startup in {place} built {thing} that predicts {weather.thing}.",
        "The changelog says {happening}.",
        "After the update, {detail} on {thing} improved a lot.",
        "{person} returned {thing} when {happening}.",
        "{time}, tech podcasts kept discussing {detail}.",
        "The company demoed {thing} during {sports.thing}.",
        "Who expected that {happening} with {thing}?",
    ],
    "food": [
        "In {place}, {happening} {time}.",
        "{person} said {thing} was {opinion} because {happening}.",
        "We ordered {thing} and {happening}.",
        "{time}, {person} cooked {thing} using {detail}.",
        "The food critic in {place} wrote about {detail}.",
        "I made {thing} for {person} {time}, but {happening}.",
        "The secret to {thing} is {detail}, according to {person}.",
        "A new place in {place} serves {thing} all day.",
        "{person} could not believe that {happening}.",
        "Home cooks argue endlessly about {detail}.",
        "We ate {thing} indoors because of {weather.thing}.",
        "{person} brought {thing} to {sports.thing}.",
        "The recipe explains what happens if you rush it: {happening}.",
        "After tasting {thing}, {person} asked about {detail}.",
        "{person} sent back {thing} when {happening}.",
        "{time}, cooking shows kept discussing {detail}.",
        "{person} photographed {thing} with {technology.thing}.",
        "Who expected that {happening} at dinner?",
    ],
    "weather": [
        "In {place}, {happening} {time}.",
        "{person} said {thing} was {opinion} because {happening}.",
        "Residents were warned about {thing} after {happening}.",
        "{time}, {thing} hit {place} and {happening}.",
        "Meteorologists in {place} are watching {detail}.",
        "I walked home with {person} {time} and {happening}.",
        "According to {detail}, {thing} will last until Thursday.",
        "{thing} is expected in {place} by the weekend.",
        "{person} could not believe that {happening}.",
        "Farmers are worried about {detail} this year.",
        "{thing} forced the organisers to cancel {sports.thing}.",
        "{person} checked {detail} on {technology.thing} before leaving.",
        "The forecast says {happening} overnight.",
        "After {thing}, {person} kept an eye on {detail}.",
        "{person} stayed indoors when {happening}.",
        "{time}, the news kept discussing {detail}.",
        "Because of {thing}, the picnic with {food.thing} was called off.",
        "Who expected that {happening} in {place}?",
    ],
}

_SLOT = re.compile(r"\{(?:(\w+)\.)?(\w+)\}")


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def _fill(template: str, topic: str, rng: random.Random) -> str:
    def pick(m: re.Match) -> str:
        other, slot = m.group(1), m.group(2)
        if other:
            return rng.choice(_words(SLOTS[other][slot]))
        table = SLOTS[topic] if slot in SLOTS[topic] else SHARED
        return rng.choice(_words(table[slot]))

    s = _SLOT.sub(pick, template)
    return s[0].upper() + s[1:]


def generate_text_dataset(seed: int = 0, per_topic: int = PER_TOPIC) -> list[tuple[str, str]]:
    """Return `per_topic` unique (text, label) pairs per topic in TOPICS, shuffled; same seed,
    same list."""
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for topic in TOPICS:
        count = 0
        while count < per_topic:
            text = _fill(rng.choice(TOPIC_TEMPLATES[topic]), topic, rng)
            if text not in seen:
                seen.add(text)
                rows.append((text, topic))
                count += 1
    rng.shuffle(rows)
    return rows
