"""Small labelled sentences for the examples that train on BERT features: four topics, twelve sentences each."""

TOPICS = {
    "sports": [
        "the striker scored twice in the second half", "our team won the championship final last night",
        "the goalkeeper saved a penalty in extra time", "she ran the marathon in under three hours",
        "the coach praised the defence after the match", "he hit a home run in the ninth inning",
        "the tennis player served an ace to win the set", "fans cheered as the team lifted the trophy",
        "the cyclist won the mountain stage of the tour", "the referee showed a red card to the defender",
        "the swimmer broke the world record in the relay", "the boxer knocked out his opponent in round three",
    ],
    "cooking": [
        "chop the onions and fry them in butter", "bake the bread for forty minutes at high heat",
        "season the soup with salt and black pepper", "whisk the eggs with sugar until pale",
        "simmer the tomato sauce for an hour", "roast the chicken with garlic and lemon",
        "knead the dough until it is smooth and elastic", "stir the risotto slowly while adding stock",
        "grill the fish and serve it with rice", "melt the chocolate over a pan of hot water",
        "marinate the beef overnight in soy sauce", "peel the potatoes and boil them until soft",
    ],
    "finance": [
        "the central bank raised interest rates again", "stocks fell sharply after the earnings report",
        "the company issued new bonds to pay its debt", "inflation rose faster than economists expected",
        "investors moved their savings into government bonds", "the currency lost value against the dollar",
        "the bank reported a record quarterly profit", "shares of the retailer dropped ten percent",
        "the fund manager sold his oil stocks", "mortgage rates climbed for the third month",
        "the merger was approved by the shareholders", "the budget deficit widened this year",
    ],
    "weather": [
        "heavy rain is expected throughout the weekend", "a cold front will bring snow to the hills",
        "temperatures will climb above thirty degrees tomorrow", "strong winds knocked down trees overnight",
        "the storm caused flooding along the coast", "skies will clear by the afternoon",
        "a thick fog covered the valley this morning", "the heatwave will last until next week",
        "thunderstorms are likely later this evening", "frost is forecast for the early hours",
        "the hurricane is moving slowly toward the islands", "light showers will spread from the west",
    ],
}


def labelled_sentences() -> tuple[list[str], list[int], list[str]]:
    """(sentences, label ids, label names), topic by topic."""
    names = list(TOPICS)
    sentences = [s for name in names for s in TOPICS[name]]
    labels = [i for i, name in enumerate(names) for _ in TOPICS[name]]
    return sentences, labels, names
