#!/usr/bin/env python3
"""Generate the quickstart customer-support intent dataset (synthetic, written for mha-ft).

Usage (from the repo root; stdlib only, deterministic):

    python recipes/data/quickstart/make_data.py            # writes train/validation/test.jsonl here
    python recipes/data/quickstart/make_data.py --out DIR  # writes them somewhere else

Every class has a hand-written list of message templates. Templates contain slots such as
``{order}`` or ``{product}`` and inline alternatives ``[a|b|c]``. For each class the templates
are shuffled with a fixed seed and split three ways: ~65% are *train* templates, and the rest
are held out, half for validation only and half for test only. Validation and test examples
are drawn half from their own held-out templates (phrasings never seen in training) and half
from train templates with fresh slot fillers, so the score reflects both kinds of
generalisation. A light "style" pass adds greetings/sign-offs, lowercasing, dropped
punctuation and occasional typos. No exact text (case- and whitespace-insensitive) appears twice
anywhere in the dataset.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

SEED = 20240611
COUNTS = {"train": 75, "validation": 15, "test": 20}  # per class
HELDOUT_SHARE = {"validation": 0.7, "test": 0.7}  # share of val/test drawn from held-out templates
TRAIN_TEMPLATE_FRACTION = 0.65
MIN_WORDS, MAX_WORDS = 3, 40

# --------------------------------------------------------------------------------------------
# Slot fillers
# --------------------------------------------------------------------------------------------
CLOTHING = ["linen shirt", "winter parka", "running jacket", "denim jacket", "hoodie",
            "summer dress", "wool jumper", "rain jacket", "fleece gilet", "puffer coat"]
GADGETS = ["smartwatch", "bluetooth speaker", "noise cancelling headset", "fitness tracker",
           "Kindle Paperwhite", "baby monitor", "robot vacuum", "electric toothbrush", "action camera",
           "Android tablet"]
APPLIANCES = ["air fryer", "espresso machine", "burr coffee grinder", "Instant Pot", "desk lamp",
              "27\" 4K monitor", "stand mixer", "cordless vacuum", "electric kettle"]
KITCHEN = ["ceramic frying pan", "cast iron skillet", "insulated water bottle", "chef's knife",
           "kids' lunch box", "glass teapot", "stainless steel saucepan"]
FURNITURE = ["standing desk", "office chair", "gaming chair", "bookshelf", "bed frame", "TV stand",
             "garden bench"]
KIDS = ["Lego Technic crane", "kids' scooter", "wooden train set", "balance bike", "dolls' house"]
OTHER = ["yoga mat", "iPhone 15 case", "leather wallet", "mechanical keyboard", "duvet cover set",
         "hiking backpack", "phone charger", "throw blanket", "USB-C hub", "merino wool scarf",
         "Nike Pegasus 40", "sofa cushion cover", "camping tent", "pair of sunglasses"]
PRODUCTS = CLOTHING + GADGETS + APPLIANCES + KITCHEN + FURNITURE + KIDS + OTHER
COLORS = ["black", "navy", "red", "olive green", "white", "grey", "beige", "pink", "sky blue", "burgundy"]
SIZES = ["S", "M", "L", "XL", "XS", "XXL", "8", "10", "12", "14", "16"]
BIG_SHOE_SIZES = ["UK 11", "UK 12", "US 12", "US 13", "46", "47"]
# {date}: adverbial past date ("I ordered it {date}"); {since}: bare past date ("since {since}")
DATES = [
    "on March 3", "last Tuesday", "on the 14th", "on 12/05", "two weeks ago", "yesterday", "on Friday",
    "10 days ago", "on 3 June", "on Monday", "last week", "on Nov 21", "on the 2nd", "on Sunday night",
    "earlier this month", "on August 9th", "a few days ago",
]
SINCE_DATES = ["March 3", "last Tuesday", "the 14th", "12/05", "yesterday", "Friday", "3 June", "Monday",
               "last week", "Nov 21", "the 2nd", "the weekend", "August 9th"]
# {future}: bare future day/date usable after on/by/before/until/from
FUTURE_DATES = ["Friday", "the 20th", "Saturday", "June 30", "Thursday", "the 1st", "the 15th", "Dec 18",
                "Monday", "the 28th"]
CARRIERS = ["UPS", "DHL", "FedEx", "USPS", "Royal Mail", "DPD", "Evri", "the courier", "GLS", "Canada Post"]
CITIES = ["Leeds", "Austin", "Toronto", "Manchester", "Denver", "Bristol", "Portland", "Dublin",
          "Glasgow", "San Diego", "Ottawa", "Birmingham", "Seattle", "Cardiff"]
STREETS = ["Oak Street", "Mill Road", "Pine Ave", "Church Lane", "Maple Drive", "High Street",
           "Elm Court", "Station Road", "Cedar Blvd", "Victoria Terrace", "Lakeview Rd"]
PAYS = ["Visa", "Mastercard", "Amex", "PayPal", "Apple Pay", "debit card", "credit card",
        "Klarna", "Google Pay", "gift card"]
NAMES = ["Sarah", "Tom", "Priya", "Marcus", "Aisha", "Liam", "Chen", "Olivia", "Diego", "Hannah",
         "Kwame", "Sofia", "Jake", "Fatima", "Noah", "Ines", "Raj", "Emily", "Mateo", "Grace"]
EMAIL_DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.co.uk", "icloud.com", "proton.me"]
CODES = ["SAVE10", "WELCOME15", "SPRING20", "FREESHIP", "BF2024", "VIP25", "STUDENT10"]


def _order(r: random.Random) -> str:
    kind = r.randrange(5)
    if kind == 0:
        return f"#{r.randint(10000, 9999999)}"
    if kind == 1:
        return f"ORD-{r.randint(100000, 999999)}"
    if kind == 2:
        return str(r.randint(10000000, 99999999))
    if kind == 3:
        return f"#A{r.randint(1000, 99999)}"
    return f"{r.choice(['WEB', 'SO', 'ON'])}{r.randint(100000, 9999999)}"


def _email(r: random.Random) -> str:
    first, last = (x.lower() for x in r.sample(NAMES, 2))
    style = r.randrange(3)
    local = {0: f"{first}{r.randint(1, 99)}", 1: f"{first}.{last}", 2: f"{first}_{r.randint(1980, 2005)}"}[style]
    return f"{local}@{r.choice(EMAIL_DOMAINS)}"


def _amount(r: random.Random) -> str:
    cur = r.choice(["$", "£", "€", "$", ""])
    val = f"{r.randint(5, 400)}.{r.choice(['00', '99', '50', '49', '95', '20'])}"
    return f"{cur}{val}" if cur else f"{val} dollars"


def _addr(r: random.Random) -> str:
    num = r.randint(1, 480)
    if r.random() < 0.3:
        return f"Flat {r.randint(1, 30)}, {num} {r.choice(STREETS)}"
    if r.random() < 0.3:
        return f"{num} {r.choice(STREETS)} Apt {r.randint(1, 20)}{r.choice('ABCD')}"
    return f"{num} {r.choice(STREETS)}"


def _zip(r: random.Random) -> str:
    if r.random() < 0.5:
        return str(r.randint(10000, 99999))
    letters = "ABCDEGHJLMNPRSTW"
    return f"{r.choice(letters)}{r.choice(letters)}{r.randint(1, 20)} {r.randint(1, 9)}{r.choice(letters)}{r.choice(letters)}"


SLOTS = {
    "order": _order,
    "product": lambda r: r.choice(PRODUCTS),
    "clothing": lambda r: r.choice(CLOTHING),
    "gadget": lambda r: r.choice(GADGETS),
    "plugin": lambda r: r.choice(GADGETS + APPLIANCES),
    "appliance": lambda r: r.choice(APPLIANCES),
    "kitchen": lambda r: r.choice(KITCHEN),
    "furniture": lambda r: r.choice(FURNITURE),
    "kids": lambda r: r.choice(KIDS),
    "color": lambda r: r.choice(COLORS),
    "size": lambda r: r.choice(SIZES),
    "shoesize": lambda r: r.choice(BIG_SHOE_SIZES),
    "date": lambda r: r.choice(DATES),
    "since": lambda r: r.choice(SINCE_DATES),
    "future": lambda r: r.choice(FUTURE_DATES),
    "days": lambda r: str(r.randint(3, 21)),
    "mins": lambda r: str(r.choice([25, 40, 45, 50, 60, 75, 90])),
    "carrier": lambda r: r.choice(CARRIERS),
    "city": lambda r: r.choice(CITIES),
    "street": lambda r: r.choice(STREETS),
    "addr": _addr,
    "apt": lambda r: f"{r.choice(['Apt', 'Flat', 'Unit', 'Suite'])} {r.randint(1, 40)}{r.choice(['', 'B', 'C'])}",
    "num": lambda r: str(r.randint(1, 250)),
    "zip": _zip,
    "pay": lambda r: r.choice(PAYS),
    "amount": _amount,
    "last4": lambda r: f"{r.randint(0, 9999):04d}",
    "name": lambda r: r.choice(NAMES),
    "email": _email,
    "code": lambda r: r.choice(CODES),
}

# --------------------------------------------------------------------------------------------
# Templates: {slot} fillers, [a|b] inline alternatives. Messages are first-person customer text.
# --------------------------------------------------------------------------------------------
TEMPLATES: dict[str, list[str]] = {
    "order_status": [
        "where is my order",
        "[Where is|What happened to] my order {order}?",
        "order {order} still hasn't arrived, any update?",
        "Hi, I placed an order {date} and haven't had any shipping confirmation yet. Can you tell me what's going on?",
        "tracking for {order} hasn't updated in {days} days",
        "Has my {product} shipped yet?",
        "when will my [package|parcel] arrive",
        "It says delivered but there's nothing here. Order {order}.",
        "Can you give me an ETA on order {order}?",
        "any news on my parcel?",
        "The {carrier} tracking link you sent just says 'label created'. Has it actually left the warehouse?",
        "I ordered a {product} {date}, what's the delivery estimate?",
        "status of {order} please",
        "is my stuff coming today or not",
        "My order was supposed to be here by {since}. Where is it now?",
        "I ordered {days} days ago and it still says processing. How long does it usually take to ship?",
        "[can i get the|what's the] tracking number for order {order}?",
        "I never got a dispatch email for my {product}, did it go out?",
        "Hello, could you check on order {order} for me? It was placed under {email}.",
        "waiting on my {product} for {days} days now.. is it lost?",
        "can u check if my order got shipped yet",
        "I only got the {product} so far. Is the rest of the order coming separately?",
        "It's been {days} days and my {carrier} tracking still shows in transit. Is it stuck somewhere?",
        "Did my order go out yet? I need the {product} before {future}.",
        "what's happening with {order}",
        "Could you tell me which courier is delivering my order and roughly when?",
        "The app has shown my order as 'preparing' since {since}. Is that normal?",
        "Just checking in on my order, number {order}.",
        "tracking says out for delivery since yesterday but nothing came",
        "Expected delivery date for {order}??",
        "I'm going away on {future}. Will my {product} arrive before then?",
        "has order {order} been dispatched",
        "still no sign of my parcel",
        "Is there a way to see where my package is right now? Order {order}.",
        "{carrier} says they haven't received my parcel, but your site says shipped. Which is right?",
        "it's a gift and i need to know when it'll get here, order {order}",
        "I received 1 of the 2 boxes for order {order}. Is the second one still on its way?",
        "Does my preorder of the {product} have a ship date yet?",
        "no update since {since}, where's my stuff",
        "The confirmation email came through but nothing after that. Is my order actually being processed?",
        "when does the {product} ship",
        "What is the current status of my purchase from {since}?",
        "{carrier} van came and went, still no box. order {order}",
        "Is my {product} going to make it by {future}? Haven't seen any tracking info.",
        "Hello, I ordered a {product} and a few other bits {date} for my son's birthday on {future}. Tracking hasn't moved for [four|five|a few] days. Can you find out where the parcel actually is?",
        "So the website said 2-4 working days, it's now day {days}, and the {carrier} page just says 'in transit'. I'm not angry, just want to know when to expect it.",
        "I'm a regular customer and normally my stuff turns up in a couple of days. This time nothing since {since}. Could someone look up {order} and tell me where it's at?",
        "my neighbour said a driver came by but I've got no note and no parcel, can you see where {order} is now",
    ],
    "cancel_order": [
        "cancel my order",
        "Please cancel order {order}.",
        "I don't want order {order} anymore, please stop it before it ships.",
        "I ordered the {product} by mistake. Can you scrap that order?",
        "how do i cancel an order i just placed",
        "Changed my mind about the {product}, can you cancel it before it goes out?",
        "I accidentally placed the same order twice ({order}). Please cancel one of them.",
        "Please don't ship order {order}. I no longer need it.",
        "Is it too late to cancel {order}? I placed it {date}.",
        "found it cheaper elsewhere, please cancel my order",
        "stop my order!!",
        "I want to call off my purchase from {since}, order {order}.",
        "I picked the wrong size on {order}, please cancel it and I'll place a new one.",
        "Please kill order {order}, my kid placed it without asking.",
        "I'd like to withdraw order {order} before it's dispatched.",
        "no longer need the {product}, please cancel before shipping",
        "cancel {order} pls",
        "The estimated delivery is {future}, that's too late for me. I'd rather cancel the whole order.",
        "Can I still cancel? Order number {order}, placed about an hour ago.",
        "I placed an order for a {product} but I want to back out. It hasn't shipped yet.",
        "Please take the {product} off my order {order}, I'll keep the rest.",
        "why is there no cancel button?? i need to cancel {order} now",
        "Order {order} was a mistake. Please don't send it.",
        "I ordered while logged into my partner's account, please cancel it and I'll redo it on mine.",
        "Please halt my order, I found the same {product} in a shop near me.",
        "Can the order I made {date} be cancelled? It's still showing as processing.",
        "I need to cancel my subscription box order before it ships on {future}.",
        "Hello, I would like to cancel my recent purchase ({order}) please. Thank you.",
        "dont send my order, i changed my mind",
        "Please void order {order} entirely, I don't want any of it.",
        "How do I stop an order that hasn't left the warehouse yet?",
        "The {product} is backordered until {future}, so just cancel the order instead.",
        "Please cancel the latest order on my account ({email}).",
        "I want out of this order. {order}. Not shipped yet.",
        "ordered 2 by mistake, only need 1, can you drop the extra one before it ships",
        "pls undo my last order",
        "Can you cancel {order} and put the money back on my {pay}? It hasn't been sent.",
        "Ordered {date}, regret it already. Can it still be stopped?",
        "Please abort order {order}.",
        "I'd rather not go through with order {order}. It hasn't shipped, right?",
        "Hi, I'm cancelling order {order}, we don't need the {product} after all.",
        "Is there a way to reverse an order before {carrier} picks it up?",
        "Hi, I placed order {order} {date} for a {product} but my partner already bought one, so we don't need it. It still says processing, so hopefully you can stop it before it leaves.",
        "I hit 'buy now' instead of 'add to basket' on the {product}. I don't want that order to go through, please make sure it never ships.",
        "Ordered a {product} earlier but the delivery estimate came through as {future}, which is no good for me. Please cancel it while it's still in processing and I'll get one locally.",
        "my account was used to place {order} by someone else in my family, nobody here wants it, please stop it",
    ],
    "return_refund": [
        "how do i return something",
        "I want to return the {product} I bought {date}.",
        "The {clothing} doesn't fit. How do I send it back?",
        "When will I get my refund for order {order}? I sent the item back {days} days ago.",
        "Can I exchange the {color} {clothing} for a size {size}?",
        "Refund still not showing on my {pay}, I returned it {date}.",
        "The {plugin} arrived broken, I'd like my money back.",
        "return label please, order {order}",
        "I received the wrong item in order {order}, how do I swap it?",
        "What's your return policy for opened items?",
        "i dont like the {product}, can i get a refund",
        "Dropped my return off at {carrier} {date}, when is my money coming?",
        "Can I still send back the {product}? It's been {days} days since delivery.",
        "The {plugin} stopped working after a week. Can I get a replacement or refund?",
        "Do I have to pay for return shipping?",
        "The {product} looks nothing like the photos. I want to send it back.",
        "You said my refund was processed but I see nothing. {amount} for order {order}.",
        "need to exchange for a bigger size",
        "Where do I print the return label? The link in the email doesn't work.",
        "How long do refunds take to go back to {pay}?",
        "I returned 2 of the 3 items in {order} but only got refunded for one.",
        "wrong colour sent, want a refund not a replacement",
        "Can I return a gift without the receipt?",
        "My return was marked as received {date}, still no money.",
        "The {furniture} is missing parts. I'd rather just return it.",
        "Please refund me for the {plugin}, it's defective.",
        "Can I get store credit instead of my money back?",
        "I'd like to send this {clothing} back and get a size {size} instead.",
        "unwanted item, still sealed, how to send back",
        "I was told I'd get {amount} back, but only part of it came through.",
        "Item arrived damaged. Photos attached. Please advise how to get my money back.",
        "Does the return window start from the delivery date or the order date?",
        "the shoes are too small, can i swap them",
        "Refund for {order}?",
        "Kept the box and tags, want to return the {product}.",
        "Can I drop returns at a store or does it have to be by post?",
        "Not what I expected. Return please. Order {order}.",
        "Still waiting on my refund of {amount}, it's been {days} days since you got the parcel back.",
        "Could you arrange a pickup for my return? The {furniture} is too heavy to take to the post office.",
        "I need to send back part of my order.",
        "The {clothing} came in {color} instead of the colour I picked. Can I exchange it?",
        "got the {plugin} today and it's the wrong model. How do I get it replaced?",
        "Hi, I bought the {product} {date} and used it twice. It's fine but not really for me. It's still within 30 days, so how do I go about sending it back for a refund?",
        "I sent the {product} back with {carrier} {date}, tracking shows you received it, but the {amount} still hasn't come back to my {pay}. How long does it usually take?",
        "The {color} {clothing} I ordered came in a totally different shade to the website. I'd like to swap it for the {color} one, or just get my money back if that's easier.",
        "so the [espresso machine|electric kettle|insulated water bottle|Instant Pot|glass teapot] from order {order} leaks from the bottom, I'd like to get it replaced or get my money back, whichever is quicker",
    ],
    "shipping_address_change": [
        "change delivery address",
        "I need to change the shipping address on order {order}.",
        "I moved last week, can you send order {order} to {addr} instead?",
        "Typo in my address! It should be {addr}, not what I entered.",
        "Can I have my {product} delivered to my office instead of home?",
        "wrong postcode on my order, can u fix it",
        "Please update the delivery address for {order} to {addr}, {city}.",
        "Is it possible to redirect my parcel? I won't be at that address on {future}.",
        "I forgot to add my apartment number. It's {apt}.",
        "Can you ship to my parents' place in {city} instead?",
        "the address on my order is my old one, need to update it before it ships",
        "I entered my billing address as the delivery address by mistake. The correct one is {addr}.",
        "Can I collect it from a {carrier} locker instead of home delivery?",
        "Please send order {order} to {addr}. I don't live at the old address anymore.",
        "new address: {addr}, {city}. order {order}",
        "Can you still change where my package goes if it has already shipped?",
        "Could you change the recipient name and address? It's a gift for my sister in {city}.",
        "i put the wrong house number, it's {num} not the one i typed",
        "Please deliver to my neighbour at number {num} instead, I'll be away.",
        "How do I edit the delivery details on an order I already placed?",
        "Redirect {order} to my work address please: {addr}.",
        "my address autocorrected to the wrong city, should be {city}",
        "Can the courier bring it to {addr} instead? That's my new place.",
        "I'm staying in {city} until {future}, can you send it there?",
        "The delivery address is missing the flat number. Please add {apt}.",
        "need to update where my order is going",
        "Could you reroute my parcel to the pickup point on {street}?",
        "Is it too late to change the address for order {order}? Wrong zip code.",
        "I've just realised I used my old address. Can you switch it to {addr} before dispatch?",
        "can i change address after ordering",
        "Please ship to {addr} rather than the address on file.",
        "I'd like my {product} sent to a different address than my other order.",
        "Moving house on {future}, can you send my order to {addr} instead?",
        "wrong address on {order}!!! please fix before it goes out",
        "Our office moved, please update the delivery on {order} to {apt}, {num} {street}.",
        "Can you send it to my hotel in {city}? I'm travelling.",
        "Please correct the delivery postcode, it should be {zip}.",
        "The house number on my order is wrong.",
        "I'm not going to be home, could the {product} go to {addr} in {city}?",
        "order {order} - street name is misspelled, it's {street}",
        "Hello, I placed order {order} {date} and only just noticed it's going to my old flat. I moved to {addr}, {city} last month. Could you update the delivery address before it ships?",
        "I'm going to be at my parents' place in {city} from {future} for two weeks, so could the {product} be delivered there instead? The address is {addr}.",
        "I think I typed my street name wrong, it should be {street}, same house number. Can you correct it on {order} before the courier picks it up?",
        "the {product} is for my mum so please send it to her house instead of mine: {addr}, {city}",
    ],
    "payment_problem": [
        "payment failed",
        "My {pay} keeps getting declined at checkout.",
        "I was charged twice for order {order}.",
        "Why is there a pending charge of {amount} when my order didn't go through?",
        "Checkout won't accept my card ending in {last4}.",
        "PayPal says the payment failed but the money left my account.",
        "The promo code {code} isn't applying at checkout.",
        "Can I pay with {pay}? It's not showing as an option.",
        "I got charged {amount} but my order total was less than that.",
        "There's a charge from you on my statement I don't recognise.",
        "card declined even though i have funds",
        "My Klarna instalment was taken twice this month.",
        "Error 'payment could not be processed' every time I try to buy the {product}.",
        "How do I update the card on my account? The old one expired.",
        "I paid but the order says payment pending.",
        "The gift card balance didn't apply to my order.",
        "My bank shows the payment for {order} but your site says unpaid. Did you receive it?",
        "keep getting a 3D secure error when paying",
        "You charged my {pay} after I'd already paid with PayPal.",
        "can't complete checkout, payment page just spins",
        "Why was I charged tax twice on {order}?",
        "My bank blocked your payment as suspicious, what do I do?",
        "Please check why {amount} was taken from my account {date}, I never placed an order.",
        "Apple Pay keeps failing in your app.",
        "I used the wrong card, can I switch the payment on {order} to {pay}?",
        "double charge on my {pay}, order {order}",
        "The total jumped by {amount} at the last step of checkout.",
        "Can't add a new card, it says invalid even though the number is correct.",
        "I was billed in dollars instead of euros.",
        "The discount showed in the basket but I was charged full price.",
        "charged for shipping even though it said free delivery over $50",
        "Your site took my money but the order failed.",
        "Getting 'transaction declined' with every card I try.",
        "The pay-in-3 option disappeared at checkout.",
        "Why does my statement show {amount} from your store? That's not what I paid.",
        "the payment page says session expired every time i hit pay",
        "There's still a hold of {amount} on my card after {days} days.",
        "My {pay} was debited {amount} for {order} and then debited again the next day.",
        "tried 3 times to pay for the {product}, each time it errors out",
        "Gift card code says invalid at checkout, I bought it {date}.",
        "Hi, I tried to buy the {product} {date}. Checkout said my card was declined, so I tried again and it worked, but now my bank shows two charges of {amount}. Can you look into it?",
        "I'm trying to place an order for a {product} but every time I get to the last step the page refreshes and my basket empties. My {pay} has been checked and is fine.",
        "My bank statement has three separate debits from your company {date}, but I only placed one order ({order}). Please check what happened with the payment.",
        "I ordered with {pay} and it says 'awaiting payment' on {order} even though the money has gone. Will it go through or should I pay again?",
    ],
    "account_access": [
        "cant log in",
        "I forgot my password and the reset email never arrives.",
        "My account is locked after too many attempts.",
        "I'm not getting the verification code by SMS.",
        "Can't sign in with Google anymore.",
        "I no longer have access to {email}, how do I get into my account?",
        "It says my email isn't registered but I've ordered from you before.",
        "password reset link expired",
        "Someone changed my password, I think my account was hacked.",
        "the app logs me out every time i open it",
        "Two-factor codes aren't working.",
        "I signed up with {email} but never got the activation link.",
        "Login page says 'invalid credentials' but I'm sure the password is right.",
        "I think I made two accounts by accident and now I can't get into either.",
        "Got a sign-in alert from {city} that wasn't me.",
        "Reset password button does nothing.",
        "my account got suspended?? why",
        "My phone number changed and now I can't receive the login code.",
        "Cannot log in on the website but the app works fine.",
        "I only remember my email {email}, what's my username?",
        "stuck in a login loop",
        "Your site keeps saying my session has expired when I try to sign in.",
        "I've been locked out of my account since {since}. Please help me get back in.",
        "The captcha won't let me sign in.",
        "unable to access my account",
        "The reset email goes to my old address which I can't use anymore.",
        "Why was my account deactivated? I didn't do anything.",
        "can u unlock my account {email}",
        "Sign in with Apple says account not found.",
        "My password hasn't worked since your website update.",
        "I want to see my orders but can't get past the login screen.",
        "Please reset my password for {email}.",
        "Trying to log in to track my order but it won't let me in.",
        "My authenticator app was on my old phone, how do I log in now?",
        "The 'forgot password' page says too many requests.",
        "tried to sign in {days} times today, keeps rejecting my password",
        "I can't get into my account to use my saved {pay} details.",
        "your website won't recognise my email address when I try to log in, it's {email}",
        "Account verification email is not coming, checked spam too.",
        "Logged in on my laptop fine but on my phone it says user does not exist.",
        "Hi, I've been trying to sign in since {since} to check my orders. I reset my password twice, the emails arrived, but the new password still isn't accepted. My email is {email}.",
        "I got a new phone and the login code still goes to my old number, which I don't have anymore. How can I prove it's me and get back into my account?",
        "Every time I enter my email the site says 'we couldn't find an account', but I've ordered from you a dozen times with {email}. Did my account get deleted?",
        "i got an email saying my password was changed, it wasn't me, and now i cant get in. please help, it's {email}",
    ],
    "product_question": [
        "is this waterproof",
        "Does the {product} come in {color}?",
        "Is the [smartwatch|bluetooth speaker|noise cancelling headset|fitness tracker|baby monitor|USB-C hub] compatible with an iPhone 15?",
        "What are the dimensions of the {product}?",
        "When will the {product} be back in stock?",
        "Does the {clothing} run true to size? I usually take size {size}.",
        "What material is the [{clothing}|{kitchen}|sofa cushion cover|yoga mat] made of?",
        "Is there a warranty on the {product}?",
        "Can the {kitchen} go in the dishwasher?",
        "Does it come with a charger or do I need to buy one separately?",
        "whats the difference between the {product} and the pro version",
        "Is the {kids} suitable for a 5 year old?",
        "how heavy is the {product}",
        "Will the {appliance} work with UK plugs?",
        "Do you sell replacement parts for the [{plugin}|{furniture}]?",
        "Is the {color} one the same fabric as the black one?",
        "Is this item vegan?",
        "Battery life on the {gadget}?",
        "Does the {furniture} need assembly?",
        "Are the photos of the {product} the actual colour?",
        "Can I get the [leather wallet|insulated water bottle|chef's knife|smartwatch] engraved?",
        "Is the [{clothing}|duvet cover set|throw blanket|sofa cushion cover] machine washable?",
        "Will you restock size {size}?",
        "Does this model have bluetooth 5.3?",
        "What's included in the box with the {product}?",
        "i'm between sizes M and L, which should i get",
        "Is the {plugin} new or refurbished?",
        "Do you have the {clothing} in a larger size?",
        "Is the [ceramic frying pan|cast iron skillet|stainless steel saucepan|wok] safe to use on an induction hob?",
        "Does the {plugin} come with a manual in Spanish?",
        "how long does the {gadget} last on one charge",
        "Is the [insulated water bottle|kids' lunch box|blender jug|baby bottle set] BPA free?",
        "Will this fit a 15 inch laptop?",
        "Which [yoga mat|espresso machine|camping tent|mechanical keyboard|action camera] would you recommend for a beginner?",
        "Is the price for one or a pair?",
        "Can I use the [bluetooth speaker|throw blanket|action camera|garden bench cushion] outdoors?",
        "Thinking of buying the [robot vacuum|air fryer|burr coffee grinder|espresso machine|mechanical keyboard|stand mixer] - is it noisy?",
        "Does the {color} {clothing} fade after washing?",
        "How many watts is the {appliance}?",
        "Before I order: is the {gadget} the 2024 model or last year's?",
        "Hi, I'm looking at the {gadget} on your site. Does it come with a carry case, and is the one in the photos the {color} version or the grey one?",
        "Thinking about ordering the [Nike Pegasus 40|Salomon trail shoes|leather Chelsea boots|walking boots] for my dad. He's got quite large feet, usually a {shoesize}. Do they come up big or small?",
        "Before I buy: the {clothing} listing says 'one size', but what are the actual measurements? I want to be sure it fits before I order.",
        "Hi, does the {gadget} need a special app to work, or can I use it straight out of the box without making an account?",
    ],
    "complaint": [
        "worst service ever",
        "Your customer service agent hung up on me.",
        "I've emailed three times and nobody has replied. This is ridiculous.",
        "The courier threw my parcel over the fence and it landed in a puddle.",
        "Your packaging is so wasteful, a tiny [phone charger|USB-C hub|leather wallet|iPhone 15 case] in a huge box.",
        "I'm very disappointed with how I was treated in your {city} store.",
        "The quality of your products has really gone downhill.",
        "I want to speak to a manager about how my issue was handled.",
        "Your chat bot is useless.",
        "Delivery driver was rude to me.",
        "I waited on hold for {mins} minutes and then got cut off.",
        "Not happy. Your website is full of misleading prices.",
        "I'd like to file a formal complaint about your agent {name}.",
        "Stop sending me marketing emails every single day, it's too much.",
        "Honestly the whole experience was terrible from start to finish.",
        "You promised next day delivery and it took a week. Unacceptable.",
        "I've been a loyal customer for years and this is how you treat me?",
        "This is the third time my order has come late. I'm done with you guys.",
        "Your staff keep giving me different answers.",
        "I'm going to leave a 1 star review.",
        "The driver left my parcel on the doorstep in the rain, very careless.",
        "your return process is a joke",
        "Nobody told me the item was on backorder when I bought it. Very poor communication.",
        "I'm fed up with the constant delays.",
        "The person on the phone was condescending and unhelpful.",
        "Your ads said 50% off everything but it was only on a few items. Misleading.",
        "absolutely disgusted by the service I received today",
        "I want to raise a complaint about the way my refund request was handled.",
        "This company doesn't care about its customers.",
        "Why does nobody ever answer the phone?",
        "The delivery guy didn't even knock, just left a card.",
        "Your app crashes constantly, it's unusable.",
        "I've been passed between departments five times.",
        "Really unimpressed with {carrier}, why do you still use them?",
        "Shocking customer care. {days} days and no reply to my email.",
        "I was promised a call back {date} and nobody called.",
        "Please escalate this, I'm extremely unhappy with your service.",
        "{name} in your support team was really dismissive when I asked about my {product}.",
        "Sick of being told 'we'll look into it' and then nothing happens.",
        "The {product} is fine but the way your team dealt with me was awful.",
        "I've ordered from you for years but this last month has been a shambles. Late deliveries, no replies to emails, and the one person I got on the phone was rude. Very disappointed.",
        "I'm writing to complain about the {carrier} driver who delivered my {product} {date}. He was shouting at my elderly mum on the doorstep. This is not acceptable.",
        "Your support told me three different things about my {product} in three chats. Nobody seems to know what they're doing and I'm tired of repeating myself.",
        "honestly i expected better, the site is slow, the emails are spammy and support never gets back to you. not impressed",
    ],
}

# --------------------------------------------------------------------------------------------
# Style pass
# --------------------------------------------------------------------------------------------
PREAMBLES = ["Sorry to bother you.", "Hope you are well.", "Long time customer here.", "Hi again.",
             "Hoping you can help."]
PREFIXES = ["Hi,", "Hello,", "Hey,", "Hi there,", "Good morning,", "hello team,", "Hi, {name} here.",
            "Quick question:", "Hiya,", "Dear support,", "Good afternoon.", "hi"]
SUFFIXES = ["Thanks.", "Thank you!", "thx", "Cheers", "Thanks in advance.", "Regards, {name}",
            "Please help.", "asap please", "- {name}", "Many thanks", "ty", "Appreciate it."]

_SLOT_RE = re.compile(r"\{(\w+)\}")
_ALT_RE = re.compile(r"\[([^\]]+)\]")
_AN_RE = re.compile(r"\b([Aa]) ([aeioAEIO])")


def fill(template: str, r: random.Random, fixed: dict[str, str] | None = None) -> str:
    fixed = fixed or {}
    text = _ALT_RE.sub(lambda m: r.choice(m.group(1).split("|")), template)
    text = _SLOT_RE.sub(lambda m: fixed.get(m.group(1)) or SLOTS[m.group(1)](r), text)
    return _AN_RE.sub(lambda m: m.group(1) + "n " + m.group(2), text)


def typo(text: str, r: random.Random) -> str:
    words = text.split(" ")
    idx = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 5]
    if not idx:
        return text
    i = r.choice(idx)
    w = words[i]
    j = r.randrange(1, len(w) - 1)
    kind = r.randrange(3)
    if kind == 0:  # swap two adjacent letters
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    elif kind == 1:  # drop a letter
        w = w[:j] + w[j + 1:]
    else:  # double a letter
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


_GREETING_RE = re.compile(r"^(hi|hello|hey|hiya|dear|good (morning|afternoon))\b", re.I)


def stylize(body: str, r: random.Random) -> str:
    text = body
    signer = {"name": r.choice(NAMES)}  # one sender name per message
    if r.random() < 0.12 and not _GREETING_RE.match(text):
        text = f"{r.choice(PREAMBLES)} {text[0].upper()}{text[1:]}"
    if r.random() < 0.3 and not _GREETING_RE.match(text):
        choices = PREFIXES if text.rstrip().endswith("?") else [x for x in PREFIXES if x != "Quick question:"]
        pre = fill(r.choice(choices), r, signer)
        first = text.split(" ", 1)[0]
        if not pre.endswith(".") and first not in ("I", "I'm", "I've", "I'd") and not first.isupper():
            text = text[0].lower() + text[1:]
        text = f"{pre} {text}"
    if r.random() < 0.3 and not re.search(r"thank|cheers", text[-20:], re.I):
        # sign with a name at most once per message
        choices = [x for x in SUFFIXES if "{name}" not in x] if signer["name"] in text else SUFFIXES
        suf = fill(r.choice(choices), r, signer)
        if text[-1].isalnum():
            text += "."
        text = f"{text} {suf}"
    if r.random() < 0.2:
        text = text.lower()
    if r.random() < 0.2:
        text = text.rstrip(".!")
    if r.random() < 0.15:
        text = typo(text, r)
    return text


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def build(seed: int = SEED) -> dict[str, list[dict[str, str]]]:
    r = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {s: [] for s in COUNTS}
    for label, templates in TEMPLATES.items():
        tpls = list(templates)
        r.shuffle(tpls)
        n_train = round(len(tpls) * TRAIN_TEMPLATE_FRACTION)
        n_val = (len(tpls) - n_train) // 2
        pools = {
            "train": tpls[:n_train],
            "validation": tpls[n_train:n_train + n_val],
            "test": tpls[n_train + n_val:],
        }
        for split in ("train", "validation", "test"):
            n = COUNTS[split]
            if split == "train":
                plan = [pools["train"]] * n
            else:
                n_held = round(n * HELDOUT_SHARE[split])
                plan = [pools[split]] * n_held + [pools["train"]] * (n - n_held)
            # cycle through templates so each is used about equally often
            cursors: dict[int, list[str]] = {}
            for pool in plan:
                key = id(pool)
                for _attempt in range(200):
                    if not cursors.get(key):
                        cursors[key] = r.sample(pool, len(pool))
                    tpl = cursors[key].pop()
                    text = stylize(fill(tpl, r), r)
                    if MIN_WORDS <= len(text.split()) <= MAX_WORDS and norm(text) not in seen:
                        break
                else:
                    raise RuntimeError(f"could not make a unique example for {label}/{split}")
                seen.add(norm(text))
                splits[split].append({"text": text, "label": label})
    for rows in splits.values():
        r.shuffle(rows)
    return splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    splits = build(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        path = args.out / f"{split}.jsonl"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"wrote {len(rows):4d} rows -> {path}")


if __name__ == "__main__":
    main()
