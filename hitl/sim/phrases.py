"""The synthetic world's phrase data: per-intent templates of written messages (launch data and the
non-drift channels) and of voice transcripts (the drift channel), the agent's replies, and the slot values
and trimmings the generators in hitl/sim/world.py fill them with. Data only: no randomness here."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------------------
# Standard written phrasing (launch data and the non-drift production channels).
# Slots: {amount} {fee} {loan} {merchant} {person} {days} {weekday} {when} {city} {street} {please}
# ---------------------------------------------------------------------------------------------------------
STANDARD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "card_lost": (
        "I lost my card {when} and need to block it{please}.",
        "My debit card is missing, can you freeze it{please}?",
        "I think my card was stolen at {merchant}. Please cancel it.",
        "I can't find my credit card anywhere and need to report it lost.",
        "Someone stole my wallet with my bank card in it {when}.",
        "Please block my card right away, I lost it {when}.",
        "My card is lost. How do I get it frozen and replaced?",
        "I left my card at {merchant} {when} and now it's gone.",
        "I need to report a lost card and order a replacement{please}.",
    ),
    "card_arrival": (
        "I ordered a new card {days} days ago and it still hasn't arrived.",
        "When will my new card arrive?",
        "My replacement card has not been delivered yet, it's been {days} days.",
        "How long does card delivery usually take?",
        "Can you track the card you posted to me on {weekday}{please}?",
        "Still waiting for my card to arrive, I ordered it {days} days ago.",
        "Has my new debit card been sent out yet?",
        "The card you said would arrive by {weekday} never showed up.",
        "Is there a way to check the delivery status of my new card?",
    ),
    "transfer_failed": (
        "My transfer of {amount} to {person} failed.",
        "I tried to send {amount} to {person} and the transfer was declined.",
        "Why did my bank transfer fail {when}?",
        "The payment of {amount} I sent on {weekday} shows as failed.",
        "My wire transfer didn't go through, can you check what happened{please}?",
        "My transfer to {person} keeps failing with an error.",
        "I sent {amount} {days} days ago but the recipient never received it.",
        "My outgoing transfer was rejected, please tell me why.",
    ),
    "refund_request": (
        "I'd like a refund for my purchase at {merchant}.",
        "{merchant} agreed to refund {amount} but I haven't received it.",
        "How do I request a refund for a {amount} charge from {merchant}?",
        "I returned an item to {merchant} {days} days ago, where is my refund?",
        "Please help me get a refund from {merchant} for a faulty order.",
        "I cancelled my order with {merchant} and want a refund of {amount}.",
        "Can you process a refund for a duplicate purchase at {merchant}{please}?",
        "I am requesting a refund of {amount} because the goods never arrived.",
    ),
    "balance_inquiry": (
        "What is my current account balance?",
        "How much money do I have in my account right now?",
        "Can you tell me my available balance{please}?",
        "Could you check my balance{please}?",
        "What's the balance on my savings account?",
        "I need to know my balance before {weekday}.",
        "Show me my balance and whether the {amount} deposit has cleared.",
        "What's my balance after the {merchant} payment?",
    ),
    "change_address": (
        "I moved and need to update my address.",
        "How do I change my home address on my account?",
        "Please update my address to {street}.",
        "I'm moving to {city} next month, how do I change my address?",
        "My mailing address has changed, can you update it{please}?",
        "I need to change the postal address for my statements.",
        "Can I update my address in the app?",
        "My new address is {street}, {city}. Please update my details.",
    ),
    "close_account": (
        "I want to close my account.",
        "Please close my savings account and send me the remaining funds.",
        "How do I cancel my account with you?",
        "I'd like to shut down my account permanently.",
        "I'm switching banks, so please close my account.",
        "What do I need to do to close my joint account?",
        "Cancel my membership and close all my accounts{please}.",
        "I no longer need this account, please close it by {weekday}.",
    ),
    "loan_inquiry": (
        "What are your current interest rates for personal loans?",
        "Can I apply for a loan of {loan}?",
        "I'm interested in a car loan, what do I need to apply?",
        "Am I eligible for a personal loan?",
        "How long does a loan application take to process?",
        "What's the maximum amount I can borrow as a loan?",
        "I'd like information about home loans and mortgage rates{please}.",
        "Can I get a loan to cover {loan} of home repairs?",
    ),
    "fee_dispute": (
        "Why was I charged a {fee} fee on {weekday}?",
        "I want to dispute a {fee} overdraft fee.",
        "There is a monthly fee on my account I never agreed to.",
        "You charged me a {fee} foreign transaction fee, please reverse it.",
        "Please waive the late payment fee, it was your error.",
        "I was billed a {fee} maintenance fee and that seems wrong.",
        "Can you explain the {fee} service fee on my statement{please}?",
        "I'd like to contest the ATM fee I was charged {when}.",
    ),
    "password_reset": (
        "I forgot my password and can't log in.",
        "How do I reset my password?",
        "My account is locked after too many login attempts.",
        "Please send me a password reset link.",
        "I can't sign in to the app, my password isn't working.",
        "The password reset email never arrived, can you resend it{please}?",
        "I need to change my password, I think it was compromised.",
        "Login keeps failing, please help me reset my password.",
    ),
}

# ---------------------------------------------------------------------------------------------------------
# Drift phrasing (voice channel only): speech transcripts with different vocabulary and idioms. Templates
# marked "# confusable" borrow the surface words of another intent's standard phrasing on purpose.
# Slots: {spoken} (an amount in words) {merchant} {city} {weekday} {days_spoken}
# ---------------------------------------------------------------------------------------------------------
VOICE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "card_lost": (
        "my plastic's gone walkabout cant find it anywhere",
        "cant find the thing i pay with it was in my jacket",
        "i think i dropped the thing i tap to pay with down the pub",
        "someone nicked my purse and the card was in it",
        "the card you sent me last month its not in my wallet no more",  # confusable: card_arrival
        "need you to stop anyone using my card i dont know where it went",
        "had it on {weekday} and now its vanished the card i mean",
    ),
    "card_arrival": (
        "still waiting on the plastic the postman never brought it",
        "wheres the new one you said youd pop in the post",
        "nothing in the letterbox yet for the card",
        "you lot said a card was on its way and its been ages",
        "i lost count of the days waiting for my card to show up",  # confusable: card_lost
        "the replacement one hasnt turned up at my door like {days_spoken} days now",
        "i lost track has my card even been sent out",  # confusable: card_lost
    ),
    "transfer_failed": (
        "sent money to my mate it bounced back",
        "tried paying the rent to my landlord and it just didnt go",
        "the money i moved to my sister never landed",
        "i pushed {spoken} across to my brother and it came straight back to me",  # confusable: refund
        "my payment to the builder got knocked back",
        "paid someone off my phone and it says unsuccessful",
        "i want my money back it never reached my mate's account",  # confusable: refund_request
    ),
    "refund_request": (
        "the shop owes me {spoken} for the stuff i sent back",
        "bought some trainers off {merchant} sent them back and still no dosh",
        "{merchant} said theyd sort my money out but nothings come through",  # confusable: transfer_failed
        "i want what i paid for that order cause it never turned up",  # confusable: card_arrival
        "the hotel charged me twice and said theyd pay it back",  # confusable: fee_dispute
        "got to claw back my cash from that online shop",
    ),
    "balance_inquiry": (
        "how much have i got left in there",
        "whats in the pot right now",
        "am i in the red or not",
        "have i got enough to cover rent till payday",
        "whats sitting in my account before the weekend",  # confusable: close_account
        "how much money can i move right now",  # confusable: transfer_failed
        "tell me the number how much cash have i got",
        "whats left in there after that fee came out",  # confusable: fee_dispute
    ),
    "change_address": (
        "i've moved house where do i tell you",
        "got a new place now so the post needs to go there",  # confusable: card_arrival
        "we've relocated to {city} so can you sort my details",
        "i'm not living at the old flat anymore",
        "stop sending letters to my old gaff",  # confusable: card_arrival
        "new digs as of {weekday} need you to have it on file",
        "can you transfer my details over to the new flat i've moved",  # confusable: transfer_failed
    ),
    "close_account": (
        "i'm done with you lot just shut it all down",
        "want to take all my money out and leave for good",  # confusable: balance_inquiry
        "finish things off with the bank i dont want it anymore",
        "get rid of the whole thing with you i'm going elsewhere",
        "how do i stop being a customer here",
        "pull the plug on everything i've got with you",
        "cancel the lot my cards everything just close me down",  # confusable: card_lost
    ),
    "loan_inquiry": (
        "could i borrow a few grand for a car",
        "can you lend me something to tide me over till payday",  # confusable: balance_inquiry
        "need a bit of cash upfront for a new kitchen can you help",
        "do you lot do finance for a new motor",
        "how much could you give me if i paid it back monthly",  # confusable: refund_request
        "thinking of getting some credit for the wedding",
    ),
    "fee_dispute": (
        "why did you lot take a tenner off me for nothing",
        "theres a sneaky charge on here i never said yes to",
        "you took {spoken} off me just for using the cash machine",
        "whats this extra bit you stuck on my statement",
        "i want that money you took back it was your mistake not mine",  # confusable: refund_request
        "got stung for being a day late and thats not fair",
    ),
    "password_reset": (
        "i cant get in it keeps saying wrong code",
        "locked out totally cant get into my account",  # confusable: close_account
        "forgot the secret word thing for the app",
        "the app wont let me in anymore",
        "my login thing isnt working i need a new one",
        "the text with the code to get back in never arrived",  # confusable: card_arrival
        "forgot my login can you send a new one out to me",  # confusable: card_arrival
    ),
}

REPLIES: dict[str, str] = {
    "card_lost": "I've frozen your card to keep your money safe. A replacement is on its way.",
    "card_arrival": "New cards usually arrive within 5-7 working days. You can track yours in the app.",
    "transfer_failed": "I'm sorry your transfer failed. The funds have been returned; please check the "
    "recipient's details and try again.",
    "refund_request": "Refunds are issued by the merchant and usually appear within 5-10 working days.",
    "balance_inquiry": "You can see your available balance on the home screen of the app.",
    "change_address": "You can update your address under Profile > Personal details.",
    "close_account": "I'm sorry to see you go. You can close your account under Settings > Close account.",
    "loan_inquiry": "You can check your loan eligibility and current rates under Borrow in the app.",
    "fee_dispute": "I've opened a review of this fee. We'll get back to you within 3 working days.",
    "password_reset": "I've sent a password reset link to your registered email address.",
}

GREETINGS = ("Hi,", "Hello,", "Hi there,", "Good morning,", "Hey,")
THANKS = ("Thanks.", "Thank you!", "Thanks in advance.", "Thanks for your help.")
FILLERS = ("um", "uh", "like", "you know", "erm")
VOICE_OPENERS = ("um", "uh", "yeah so", "so like", "hi yeah", "right so", "okay um")
VOICE_CLOSERS = ("yeah", "thats it", "cheers", "please")
DECAP_KEEP = ("I ", "I'", "ATM")
MERCHANTS = ("Amazon", "Tesco", "Walmart", "Flipkart", "Uber", "Netflix", "Zara", "IKEA", "Argos", "Target")
PERSONS = ("my landlord", "my sister", "John", "Priya", "my brother", "a friend", "Sarah", "Rahul")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WHEN = ("yesterday", "this morning", "last night", "today", "over the weekend")
CITIES = ("London", "Manchester", "Leeds", "Austin", "Chicago", "Denver", "Mumbai", "Bangalore", "Pune")
STREETS = ("12 Oak Lane", "48 Park Road", "221 Elm Street", "7 MG Road", "90 Station Road", "3 Hill View")
CURRENCY = {"en-US": "$", "en-GB": "£", "en-IN": "₹"}
AMOUNTS = {
    "$": (15, 25, 40, 60, 85, 120, 250, 499, 1200),
    "£": (10, 20, 45, 60, 80, 150, 300, 750),
    "₹": (500, 900, 1500, 2500, 4000, 7500, 12000),
}
FEES = {"$": (5, 12, 25, 35), "£": (5, 8, 12, 25), "₹": (100, 250, 500, 750)}
LOANS = {"$": (5000, 10000, 25000), "£": (3000, 8000, 20000), "₹": (200000, 500000, 1000000)}
SPOKEN = {
    "$": ("twenty bucks", "fifty bucks", "a hundred bucks", "two hundred dollars"),
    "£": ("twenty quid", "forty quid", "a hundred quid", "two hundred pounds"),
    "₹": ("five hundred rupees", "two thousand rupees", "ten thousand rupees", "fifteen hundred rupees"),
}
DAYS_SPOKEN = ("five", "ten", "twelve", "fifteen", "twenty")
CONTEXTS = (
    "Account note: customer since {year}.",
    "Account note: open support tickets: {k}.",
    "Account note: card reissued {days} days ago.",
    "Account note: identity verified by SMS this session.",
    "Account note: direct debits active, salary paid on the 25th.",
    "Account note: previous contact {days} days ago about app login.",
    "Account note: travel notice on file.",
)

