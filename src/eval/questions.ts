/**
 * Built-in grade-school math word problems, written for this project (in the manner of GSM8K, not
 * taken from it): two to four steps of whole-number arithmetic each, with one integer answer. They
 * let Compare and `eval` run offline; the real GSM8K test split comes from src/eval/gsm8k.ts.
 */

/** The paper's evaluation prompt (Qwen2.5-Math's `qwen25-math-cot`), the default system message. */
export const PAPER_SYSTEM_PROMPT = 'Please reason step by step, and put your final answer within \\boxed{}.';

export interface EvalQuestion {
  /** Stable id: `builtin-NN` or `gsm8k-test-N` (the row index of the split). */
  id: string;
  question: string;
  /** The gold answer, normalised (see normalizeAnswer): an integer for every built-in question. */
  answer: string;
}

const PROBLEMS: ReadonlyArray<readonly [question: string, answer: number]> = [
  [
    'A bakery bakes 12 trays of rolls with 18 rolls on each tray. It sells 150 rolls in the morning. How many rolls are left?',
    66,
  ],
  [
    'Mira reads 14 pages on every weekday and 25 pages on each day of the weekend. How many pages does she read in one week?',
    120,
  ],
  [
    'A school bus has 11 rows of 4 seats. On Monday 9 seats were empty. How many children rode the bus on Monday?',
    35,
  ],
  [
    'Theo buys 3 notebooks at $4 each and a pen for $2. He pays with a $20 bill. How many dollars of change does he get?',
    6,
  ],
  [
    'A garden has 8 rows of tomato plants with 7 plants in each row. Each plant gives 5 tomatoes. How many tomatoes does the garden give?',
    280,
  ],
  ['Lena saves $15 every week. How many weeks does she need to save to buy a bike that costs $180?', 12],
  [
    'A train leaves the station with 240 passengers. At the first stop 37 people get off and 19 get on. At the second stop half of the passengers get off. How many passengers are still on the train?',
    111,
  ],
  [
    'A farmer has 36 cows and twice as many sheep. He sells 15 of the sheep. How many cows and sheep does he have now?',
    93,
  ],
  [
    'A box holds 24 crayons. A teacher needs 150 crayons for her class. What is the smallest number of boxes she must buy?',
    7,
  ],
  [
    'Omar runs 3 kilometres a day for 6 days, then 5 kilometres on the seventh day. How many kilometres does he run that week?',
    23,
  ],
  [
    'A family ordered 2 pizzas cut into 8 slices each. Each of the 5 family members ate 3 slices. How many slices were left over?',
    1,
  ],
  ['A shop sells pencils in packs of 6 for $3 a pack. How many dollars do 30 pencils cost?', 15],
  ['Ava is 3 times as old as her brother. Her brother is 4 years old. How old will Ava be in 5 years?', 17],
  [
    'A library had 1,250 books. It bought 340 new books and gave away 95 old ones. How many books does the library have now?',
    1495,
  ],
  [
    'An empty water tank holds 500 litres when full. It is filled at 25 litres per minute. How many minutes does it take until the tank is three fifths full?',
    12,
  ],
  [
    'Jonas earns $12 an hour. He works 7 hours on Saturday and 5 hours on Sunday. He spends a third of what he earned on a game. How many dollars does he have left?',
    96,
  ],
  [
    'A class of 28 students goes on a trip. Each car takes 4 students and one adult who drives. How many adults are needed to drive?',
    7,
  ],
  ['A recipe uses 3 eggs to make 12 cookies. How many eggs are needed to make 60 cookies?', 15],
  [
    'A rope is 45 metres long. Kai cuts off 3 pieces that are 8 metres long each. How many metres of rope are left?',
    21,
  ],
  [
    'A store had 80 shirts. On Monday it sold a quarter of them, and on Tuesday it sold 12 more. How many shirts are left?',
    48,
  ],
  [
    'Priya has 5 boxes of markers with 12 markers in each box. She gives 2 markers to each of her 9 friends. How many markers does she keep?',
    42,
  ],
  [
    'A movie starts at 6:45 pm and lasts 110 minutes. It ends at some number of minutes past 8 pm. How many minutes past 8 pm does it end?',
    35,
  ],
  [
    'The temperature was 6 degrees at sunset and fell by 9 degrees during the night. What was the temperature at dawn, in degrees?',
    -3,
  ],
  [
    'A parking garage has 6 levels with 45 spaces on each level. There are 187 cars parked in it. How many spaces are free?',
    83,
  ],
  [
    'Sam had 64 stamps. He traded away 3/8 of them and then bought 17 more. How many stamps does Sam have now?',
    57,
  ],
  [
    'A cyclist rides at 18 kilometres per hour for 2 hours, then at 12 kilometres per hour for 3 hours. How many kilometres does she ride in total?',
    72,
  ],
  [
    'A theatre has 25 rows of 32 seats. Each ticket costs $9. How many dollars does the theatre take in when every seat is sold?',
    7200,
  ],
  [
    'Nora buys 4 bags of apples with 9 apples in each bag. She throws away 5 bruised apples. Each pie needs 3 apples. How many whole pies can she bake?',
    10,
  ],
  [
    'A phone plan costs $20 a month plus 50 cents for each text message over the first 100. Ben sent 146 texts in March. How many dollars was his bill for March?',
    43,
  ],
  [
    'Grandpa had 9 apple trees. He planted 4 more trees every spring for 6 springs, and 5 of all his trees died. How many apple trees does he have now?',
    28,
  ],
  [
    'A bag holds 60 marbles that are red, blue or green. A third of them are red and a quarter of them are blue. How many marbles are green?',
    25,
  ],
  [
    'Elif walks her dog for 25 minutes twice a day. How many hours does she spend walking the dog in 6 days?',
    5,
  ],
  [
    'A factory packs 144 bottles into boxes of 12 bottles, and then puts 4 boxes on each pallet. How many pallets does it fill?',
    3,
  ],
  [
    'Lucas scored 18, 24 and 21 points in his first three games. How many points must he score in the fourth game to average 22 points per game?',
    25,
  ],
  [
    'A city planted 1,200 trees last year and two and a half times as many trees this year. How many trees did it plant in the two years together?',
    4200,
  ],
];

export const BUILTIN_QUESTIONS: readonly EvalQuestion[] = PROBLEMS.map(([question, answer], i) => ({
  id: `builtin-${String(i + 1).padStart(2, '0')}`,
  question,
  answer: String(answer),
}));
